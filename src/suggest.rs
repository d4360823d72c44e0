//! "Did you mean …?": the closest known names to one a person mistyped (experiment fields and
//! names, `/chaos` subcommands, time zones). One tuning for all of them, so every hint behaves
//! the same. Imports nothing of the crate.

use std::cmp::Ordering;

/// How similar two names must be to suggest one for the other: within a few edits (two, or a
/// third of the word's length for long words), or very alike by Jaro-Winkler.
const MAX_EDITS_MIN: usize = 2;
const MIN_JARO_WINKLER: f64 = 0.88;

/// (Jaro-Winkler similarity, edit distance) of `word` (lower case) to `candidate`, or `None`
/// when they are not close. Case does not count; for path-like names (`Europe/Berlin`) the last
/// part alone counts too, so `Berln` finds `Europe/Berlin`.
fn closeness(word: &str, candidate: &str) -> Option<(f64, usize)> {
    let full = candidate.to_lowercase();
    let last = full.rsplit('/').next().unwrap_or(&full);
    let similarity = strsim::jaro_winkler(word, &full).max(strsim::jaro_winkler(word, last));
    let edits =
        strsim::damerau_levenshtein(word, &full).min(strsim::damerau_levenshtein(word, last));
    let max_edits = MAX_EDITS_MIN.max(word.chars().count() / 3);
    (edits <= max_edits || similarity >= MIN_JARO_WINKLER).then_some((similarity, edits))
}

/// The candidates close to `word`, closest first (ties keep the candidates' order). `word`
/// itself is never suggested.
pub fn ranked<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    let lower = word.to_lowercase();
    let mut close: Vec<(f64, usize, &str)> = candidates
        .into_iter()
        .filter(|c| *c != word)
        .filter_map(|c| closeness(&lower, c).map(|(s, e)| (s, e, c)))
        .collect();
    close.sort_by(|a, b| {
        b.0.partial_cmp(&a.0)
            .unwrap_or(Ordering::Equal)
            .then(a.1.cmp(&b.1))
    });
    close.into_iter().map(|(_, _, c)| c).collect()
}

/// The closest candidate to `word`, if any is close.
pub fn closest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    ranked(word, candidates).into_iter().next()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_names_best_first() {
        assert_eq!(closest("duraton", ["path", "duration"]), Some("duration"));
        assert_eq!(closest("stauts", ["start", "status"]), Some("status"));
        assert_eq!(closest("TREM", ["TERM", "KILL"]), Some("TERM"));
        assert_eq!(closest("lod", ["l"]), Some("l"));
        assert_eq!(closest("xyzzyq", ["help", "start", "status"]), None);
        // The word itself is not a suggestion, but another spelling of it is.
        assert_eq!(closest("shop", ["shop"]), None);
        assert_eq!(closest("Shop", ["shop"]), Some("shop"));
        // Path-like names match on their last part too.
        assert_eq!(
            ranked("Berln", ["Asia/Tokyo", "Europe/Berlin"]),
            vec!["Europe/Berlin"]
        );
    }
}

//! `chaosbot report`: the learning record of one run, as markdown or JSON.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs, config_and_store};
use crate::report::record;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Markdown for people: paste it into a wiki page or a post-incident review.
    Md,
    /// JSON for other tools (`schema_version` 1, described in docs/learning-record.md).
    Json,
    /// The run as a Chaos Toolkit `journal.json` (status, deviated, steady states, runs,
    /// rollbacks), for its reporting tools.
    Chaostoolkit,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The run id (from `chaosbot history`).
    pub run: String,
    /// Markdown for people or JSON for tools.
    #[arg(long, value_enum, default_value_t = Format::Md)]
    pub format: Format,
    /// Write the record to this file instead of standard output (the file is replaced).
    #[arg(long, short, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Exit codes like `show`: 0 written, 64 no such run or unusable flags, 2 the store or the
/// output file failed.
pub async fn report(global: &GlobalArgs, args: ReportArgs) -> u8 {
    let (cfg, store) = match config_and_store(global).await {
        Ok(both) => both,
        Err(code) => return code,
    };
    let run = match store.get_run(&args.run).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!(
                "error: no run `{}` in {}; `chaosbot history` lists the runs",
                args.run,
                cfg.database_url()
            );
            return EXIT_INVALID;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_FAILED;
        }
    };
    let read = async {
        let journal = store.journal(&run.id, 0).await?;
        let questions = store.questions(&run.id).await?;
        let learnings = store.learnings(&run.id).await?;
        Ok::<_, crate::store::StoreError>((journal, questions, learnings))
    };
    let (journal, questions, learnings) = match read.await {
        Ok(all) => all,
        Err(e) => {
            eprintln!("error: cannot read run `{}`: {e}", run.id);
            return EXIT_FAILED;
        }
    };
    let rec = record::build(&run, &journal, &questions, &learnings, crate::run::now_ms());
    let text = match args.format {
        Format::Chaostoolkit => {
            let j = crate::report::chaostoolkit::journal(&run, &journal);
            match serde_json::to_string_pretty(&j) {
                Ok(mut s) => {
                    s.push('\n');
                    s
                }
                Err(e) => {
                    eprintln!("error: cannot write the journal as JSON: {e}");
                    return EXIT_FAILED;
                }
            }
        }
        Format::Md => record::to_markdown(&rec),
        Format::Json => match record::to_json(&rec) {
            Ok(mut s) => {
                s.push('\n');
                s
            }
            Err(e) => {
                eprintln!("error: cannot write the record as JSON: {e}");
                return EXIT_FAILED;
            }
        },
    };
    match &args.output {
        None => {
            print!("{text}");
            0
        }
        Some(path) => match std::fs::write(path, text.as_bytes()) {
            Ok(()) => {
                eprintln!(
                    "wrote the learning record of `{}` to {}",
                    run.id,
                    path.display()
                );
                0
            }
            Err(e) => {
                eprintln!(
                    "error: cannot write {}: {e}. Check that its folder exists and is writable",
                    path.display()
                );
                EXIT_FAILED
            }
        },
    }
}

//! `chaosbot report`: the learning record of one run, as markdown or JSON.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{EXIT_FAILED, EXIT_INVALID, GlobalArgs, config_and_store};
use crate::report::{chart, record};

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
    /// Write the record to this file instead of standard output (the file is replaced). For
    /// markdown, a folder (one that exists, or a path ending in `/`) gets `<run>.md`, and the
    /// run chart `<run>.svg` is written beside the markdown file and embedded by a relative link.
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
    let now = crate::run::now_ms();
    let rec = record::build(&run, &journal, &questions, &learnings, now);
    // Markdown to a file or folder: the chart goes beside it.
    let md_target = match (&args.output, args.format) {
        (Some(path), Format::Md) => Some(markdown_target(path, &run.id)),
        _ => None,
    };
    let mut output = args.output.clone();
    if let Some((md_path, svg_path)) = &md_target {
        let svg = match chart::render_svg(&chart::build(&run, &journal, now)) {
            Ok(svg) => svg,
            Err(e) => {
                eprintln!("error: cannot draw the chart of `{}`: {e}", run.id);
                return EXIT_FAILED;
            }
        };
        // A folder named with a trailing `/` is made; a file's folder must exist.
        if let Some(dir) = args
            .output
            .as_deref()
            .filter(|p| !p.is_dir() && is_folder_path(p))
            && let Err(e) = std::fs::create_dir_all(dir)
        {
            eprintln!(
                "error: cannot create the folder {}: {e}. Check that its parent exists and is writable",
                dir.display()
            );
            return EXIT_FAILED;
        }
        if let Err(e) = std::fs::write(svg_path, svg.as_bytes()) {
            eprintln!(
                "error: cannot write {}: {e}. Check that its folder exists and is writable",
                svg_path.display()
            );
            return EXIT_FAILED;
        }
        output = Some(md_path.clone());
    }
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
        Format::Md => match &md_target {
            Some((_, svg_path)) => {
                let link = svg_path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                record::to_markdown_with_chart(&rec, &link)
            }
            None => record::to_markdown(&rec),
        },
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
    match &output {
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

/// Where the markdown record and its chart go for `--output PATH`: a folder (an existing one,
/// or a path ending in `/`) gets `<run>.md`; a file keeps its name. The chart `<run>.svg` is
/// beside the markdown file either way.
fn markdown_target(path: &Path, run_id: &str) -> (PathBuf, PathBuf) {
    let is_dir = path.is_dir() || is_folder_path(path);
    let md = if is_dir {
        path.join(format!("{run_id}.md"))
    } else {
        path.to_path_buf()
    };
    let svg = md.with_file_name(format!("{run_id}.svg"));
    (md, svg)
}

fn is_folder_path(path: &Path) -> bool {
    path.as_os_str().to_string_lossy().ends_with('/')
}

//! `chaosbot import chaostoolkit FILE --out DIR`: a Chaos Toolkit experiment as a chaosbot
//! experiment (`DIR/<name>.yaml`) and the operator config it needs (`DIR/chaosbot.toml`).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};

use super::{EXIT_FAILED, EXIT_INVALID};
use crate::config::Config;
use crate::spec::chaostoolkit;

#[derive(Debug, Args)]
pub struct ImportArgs {
    #[command(subcommand)]
    pub from: ImportFrom,
}

#[derive(Debug, Subcommand)]
pub enum ImportFrom {
    /// A Chaos Toolkit experiment (JSON or YAML). Writes DIR/<name>.yaml and DIR/chaosbot.toml
    /// (one http target per URL base, one command target per command line, marked generated);
    /// then `chaosbot run --config DIR/chaosbot.toml DIR/<name>.yaml` runs it.
    /// `configuration` entries of type env are read now. Exit code: 0 written, 64 the file has
    /// problems (each printed with line:column and its JSON pointer; nothing is written), 2 the
    /// output could not be written.
    Chaostoolkit(ChaostoolkitArgs),
}

#[derive(Debug, Args)]
pub struct ChaostoolkitArgs {
    /// The experiment file.
    pub file: PathBuf,
    /// The directory to write into (created if needed; the two files are replaced).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn import(args: ImportArgs) -> u8 {
    match args.from {
        ImportFrom::Chaostoolkit(a) => from_chaostoolkit(&a),
    }
}

fn from_chaostoolkit(a: &ChaostoolkitArgs) -> u8 {
    let file = a.file.display().to_string();
    let text = match std::fs::read_to_string(&a.file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: cannot read {file}: {e}; check the path");
            return EXIT_INVALID;
        }
    };
    let env = |k: &str| std::env::var(k).ok();
    let imported = match chaostoolkit::import(&text, &file, &env) {
        Ok(i) => i,
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("{file}: {} problem(s); nothing was written", problems.len());
            return EXIT_INVALID;
        }
    };
    // What is written must run: the experiment is checked against the config written with it.
    let checked = Config::from_toml(&imported.config_toml)
        .map_err(|e| vec![e])
        .and_then(|cfg| {
            cfg.validate().map_err(|e| vec![e.to_string()])?;
            let yaml_name = format!("{}.yaml", imported.name);
            crate::spec::parse_experiment(&imported.experiment_yaml, &yaml_name, &cfg, &[])
                .map(|_| ())
                .map_err(|e| e.problems.iter().map(|p| p.to_string()).collect())
        });
    if let Err(problems) = checked {
        for p in &problems {
            eprintln!("{p}");
        }
        eprintln!(
            "{file}: the translation does not validate (a chaosbot bug worth reporting); nothing was written"
        );
        return EXIT_FAILED;
    }
    let exp_path = a.out.join(format!("{}.yaml", imported.name));
    let cfg_path = a.out.join("chaosbot.toml");
    let written = std::fs::create_dir_all(&a.out)
        .and_then(|_| write_replacing(&exp_path, &imported.experiment_yaml))
        .and_then(|_| write_replacing(&cfg_path, &imported.config_toml));
    if let Err(e) = written {
        eprintln!("error: cannot write into {}: {e}", a.out.display());
        return EXIT_FAILED;
    }
    for n in &imported.notes {
        eprintln!("note: {n}");
    }
    println!(
        "wrote {} and {}\nrun it: chaosbot run --config {} {}",
        exp_path.display(),
        cfg_path.display(),
        cfg_path.display(),
        exp_path.display()
    );
    0
}

/// Writes beside the target and renames over it, so a reader never sees half a file.
fn write_replacing(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp-import");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

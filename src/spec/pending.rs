//! TEMPORARY stand-ins until the spec work lands (replaced on merge).
use std::path::Path;

use super::SpecErrors;
use super::model::Experiment;
use crate::config::Config;

pub fn parse_experiment(
    _text: &str,
    _file: &str,
    _cfg: &Config,
    _overrides: &[(String, String)],
) -> Result<Experiment, SpecErrors> {
    Err(SpecErrors { problems: vec![] })
}
pub fn load_experiment(
    _path: &Path,
    _cfg: &Config,
    _overrides: &[(String, String)],
) -> Result<Experiment, SpecErrors> {
    Err(SpecErrors { problems: vec![] })
}
pub fn parse_override(arg: &str) -> Result<(String, String), String> {
    arg.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| "expected key=value".into())
}

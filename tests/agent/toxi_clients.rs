//! Toxiproxy's own clients, unmodified and installed from their registries into a tempdir,
//! drive the agent's Toxiproxy API: create, list, toxics added, read back, updated, removed,
//! reset, disabled, destroyed, with traffic through the proxy checked at each step (the
//! scripts in `clients/`). Without a registry (no network), the test says SKIP and passes.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use tokio::process::Command;

use crate::rig::Site;
use crate::toxiproxy::toxi_agent;

const PY_SCRIPT: &str = include_str!("clients/drive.py");
const JS_SCRIPT: &str = include_str!("clients/drive.js");

/// Runs a command with a time limit; `None` when it cannot start or does not finish.
async fn run(cmd: &mut Command, limit: Duration) -> Option<Output> {
    cmd.kill_on_drop(true).stdin(std::process::Stdio::null());
    tokio::time::timeout(limit, cmd.output()).await.ok()?.ok()
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Installs a package; `false` (after a SKIP line) when the registry is out of reach.
async fn install(what: &str, cmd: &mut Command) -> bool {
    match run(cmd, Duration::from_secs(120)).await {
        Some(o) if o.status.success() => true,
        Some(o) => {
            println!(
                "SKIP: cannot install {what} from its registry:\n{}",
                text(&o)
            );
            false
        }
        None => {
            println!("SKIP: cannot install {what}: the installer is missing or took over 120s");
            false
        }
    }
}

fn check(o: Option<Output>, what: &str, log: &str) {
    let Some(o) = o else {
        panic!("the {what} script did not finish within 60s; agent log:\n{log}");
    };
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success() && out.contains("ALL STEPS PASSED"),
        "the {what} script failed:\n{}\nagent log:\n{log}",
        text(&o)
    );
}

fn write(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path.to_string_lossy().into_owned()
}

#[tokio::test]
async fn the_python_toxiproxy_client_drives_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("py");
    let ok = install(
        "toxiproxy-python",
        Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .args(["--no-input", "--target"])
            .arg(&lib)
            .arg("toxiproxy-python"),
    )
    .await;
    if !ok {
        return;
    }
    let site = Site::new().await;
    let (agent, api) = toxi_agent(&site, "").await;
    let script = write(tmp.path(), "drive.py", PY_SCRIPT);
    let out = run(
        Command::new("python3")
            .arg(&script)
            .arg(api.ip().to_string())
            .arg(api.port().to_string())
            .arg(site.echo.to_string())
            .env("PYTHONPATH", &lib),
        Duration::from_secs(60),
    )
    .await;
    check(out, "toxiproxy-python", &agent.log_text());
}

#[tokio::test]
async fn the_node_toxiproxy_client_drives_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let ok = install(
        "toxiproxy-node-client",
        Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(tmp.path())
            .arg("toxiproxy-node-client"),
    )
    .await;
    if !ok {
        return;
    }
    let site = Site::new().await;
    let (agent, api) = toxi_agent(&site, "").await;
    // Beside its node_modules, so `require` finds the installed client.
    let script = write(tmp.path(), "drive.js", JS_SCRIPT);
    let out = run(
        Command::new("node")
            .arg(&script)
            .arg(format!("http://{api}"))
            .arg(site.echo.to_string()),
        Duration::from_secs(60),
    )
    .await;
    check(out, "toxiproxy-node-client", &agent.log_text());
}

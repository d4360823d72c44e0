//! Chaos Toolkit experiments: imported with `chaosbot import chaostoolkit`, run by chaosbot
//! and by `chaostoolkit` itself against the same loopback service, with the same outcome;
//! the run exported as a Chaos Toolkit journal; bad files refused, located, nothing written.
//! The fixtures and their sources are in `tests/fixtures/chaostoolkit/README.md`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_chaosbot");

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/chaostoolkit")
        .join(name)
}

/// A loopback HTTP service whose answer depends on files in its directory: `token.txt` →
/// 401 unless the request carries `Authorization: Bearer <its content>`; `error.flag`
/// → 200 `{"error": ...}`; `exchange.dat` → 200 `{"status": "ok"}`; else 503.
struct Service {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Service {
    fn start(dir: &Path) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (dir, flag) = (dir.to_path_buf(), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let token = std::fs::read_to_string(dir.join("token.txt")).ok();
                        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        let authorized = token.is_none_or(|t| {
                            head.contains(&format!("\r\nauthorization: bearer {}\r\n", t.trim()))
                        });
                        let (status, body) = if !authorized {
                            ("401 Unauthorized", r#"{"error": "unauthorized"}"#)
                        } else if dir.join("error.flag").exists() {
                            ("200 OK", r#"{"error": "injected"}"#)
                        } else if dir.join("exchange.dat").exists() {
                            ("200 OK", r#"{"status": "ok"}"#)
                        } else {
                            ("503 Service Unavailable", r#"{"status": "unavailable"}"#)
                        };
                        let _ = write!(
                            s,
                            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Service {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn chaosbot(cwd: &Path, args: &[&str], envs: &[(&str, String)]) -> Output {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("CHAOSBOT_CONFIG")
        .env("CHAOSBOT_AGENT_SOCKET", cwd.join(".agent/agent.sock"))
        .stdin(Stdio::null());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `chaos` from a venv cached under the target dir (installed on first use); None, with a
/// printed notice, when pip cannot install it.
fn chaos_bin() -> Option<PathBuf> {
    let target = Path::new(BIN).parent()?.parent()?.to_path_buf();
    let venv = target.join("chaostoolkit-venv");
    let chaos = venv.join("bin/chaos");
    // chaostoolkit-toxiproxy (module `chaostoxi`) came later than the venv may have.
    let has_toxi = || {
        Command::new(venv.join("bin/python"))
            .args(["-c", "import chaostoxi"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if chaos.exists() && has_toxi() {
        return Some(chaos);
    }
    let made = chaos.exists()
        || Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
    let installed = made
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "-q",
                "chaostoolkit",
                "chaostoolkit-lib[jsonpath]",
                "chaostoolkit-toxiproxy",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if installed && chaos.exists() && has_toxi() {
        Some(chaos)
    } else {
        eprintln!(
            "NOTICE: chaostoolkit could not be installed with pip into {}; the comparison with it is skipped",
            venv.display()
        );
        None
    }
}

/// (status, deviated, probes failing before, probes failing after) of a journal.
fn outcome(j: &Value) -> (String, bool, Vec<String>, Vec<String>) {
    let failing = |state: &Value| -> Vec<String> {
        state["probes"]
            .as_array()
            .map(|ps| {
                ps.iter()
                    .filter(|p| p["tolerance_met"] == Value::Bool(false))
                    .filter_map(|p| p["activity"]["name"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    (
        j["status"].as_str().unwrap_or_default().to_string(),
        j["deviated"].as_bool().unwrap_or_default(),
        failing(&j["steady_states"]["before"]),
        failing(&j["steady_states"]["after"]),
    )
}

/// Imports `file` (its text first adapted by `adapt`), runs it with chaosbot in `data` and
/// exports the journal; runs the same file with chaostoolkit; returns both journals.
/// `reset` puts the service's files back before each run.
fn run_both(
    tmp: &Path,
    file: &str,
    adapt: &dyn Fn(&str) -> String,
    envs: &[(&str, String)],
    reset: &dyn Fn(&Path),
    expect_exit: i32,
) -> (Value, Option<Value>) {
    let data = tmp.join("data");
    std::fs::create_dir_all(&data).unwrap();
    let source = std::fs::read_to_string(fixture(file)).unwrap();
    let ext = Path::new(file).extension().unwrap().to_string_lossy();
    let exp = tmp.join(format!("experiment.{ext}"));
    std::fs::write(&exp, adapt(&source)).unwrap();
    let out = tmp.join("imported");

    let o = chaosbot(
        &data,
        &[
            "import",
            "chaostoolkit",
            exp.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        envs,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let yaml = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "yaml"))
        .unwrap();
    let config = out.join("chaosbot.toml");
    let toml = std::fs::read_to_string(&config).unwrap();
    assert!(toml.contains("generated"), "{toml}");

    reset(&data);
    let db = format!("sqlite://{}", tmp.join("runs.db").display());
    let run_json = tmp.join("run.json");
    let o = chaosbot(
        &data,
        &[
            "--config",
            config.to_str().unwrap(),
            "--database-url",
            &db,
            "run",
            yaml.to_str().unwrap(),
            "--json",
            run_json.to_str().unwrap(),
        ],
        envs,
    );
    assert_eq!(o.status.code(), Some(expect_exit), "{}", text(&o));
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&run_json).unwrap()).unwrap();
    let run_id = doc["run"]["id"].as_str().unwrap().to_string();
    let journal_path = tmp.join("journal.json");
    let o = chaosbot(
        &data,
        &[
            "--database-url",
            &db,
            "report",
            &run_id,
            "--format",
            "chaostoolkit",
            "--output",
            journal_path.to_str().unwrap(),
        ],
        envs,
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let ours: Value =
        serde_json::from_str(&std::fs::read_to_string(&journal_path).unwrap()).unwrap();

    let theirs = chaos_bin().map(|chaos| {
        reset(&data);
        let ctk_journal = tmp.join("ctk-journal.json");
        let mut c = Command::new(chaos);
        c.current_dir(&data)
            .args(["--no-version-check", "run", "--journal-path"])
            .arg(&ctk_journal)
            .arg(&exp)
            .stdin(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        let j = std::fs::read_to_string(&ctk_journal)
            .unwrap_or_else(|_| panic!("chaostoolkit wrote no journal: {}", text(&o)));
        serde_json::from_str::<Value>(&j).unwrap()
    });
    (ours, theirs)
}

fn with_exchange_file(d: &Path) {
    let _ = std::fs::remove_file(d.join("exchange.dat.old"));
    let _ = std::fs::remove_file(d.join("error.flag"));
    std::fs::write(d.join("exchange.dat"), "data").unwrap();
}

/// A temp dir with `data/`, the directory the tools run in and the service reads.
fn workdir() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    (tmp, data)
}

#[test]
fn the_exchange_file_experiment_holds_in_both_and_its_rollback_restores_the_file() {
    let (tmp, data) = workdir();
    let svc = Service::start(&data);
    let url = format!("http://{}", svc.addr);
    let (ours, theirs) = run_both(
        tmp.path(),
        "exchange-file.json",
        &|t| t.replace("http://localhost:8080", &url),
        &[],
        &with_exchange_file,
        0,
    );
    assert!(
        data.join("exchange.dat").exists(),
        "the rollback moved the file back"
    );
    let o = outcome(&ours);
    assert_eq!(o, ("completed".into(), false, vec![], vec![]), "{ours:#}");
    assert_eq!(ours["run"][0]["activity"]["name"], "move-exchange-file");
    assert_eq!(ours["run"][0]["status"], "succeeded");
    assert_eq!(ours["rollbacks"][0]["status"], "succeeded");
    if let Some(t) = theirs {
        assert_eq!(outcome(&t), o, "chaostoolkit: {t:#}");
    }
}

/// `runtime` in the experiment (which `chaos run` reads): with `rollbacks.strategy: never`
/// neither tool plays the rollback, so the file stays moved; strategies chaosbot cannot keep
/// are refused, located, and nothing is written.
#[test]
fn the_runtime_rollback_strategy_never_is_kept_and_others_are_refused() {
    let (tmp, data) = workdir();
    let svc = Service::start(&data);
    let url = format!("http://{}", svc.addr);
    let runtime = |hypothesis: &str, rollbacks: &str| {
        let url = url.clone();
        let (h, r) = (hypothesis.to_string(), rollbacks.to_string());
        move |t: &str| {
            t.replace("http://localhost:8080", &url).replacen(
                "{",
                &format!(
                    "{{\"runtime\": {{\"hypothesis\": {{\"strategy\": \"{h}\"}}, \"rollbacks\": {{\"strategy\": \"{r}\"}}}},"
                ),
                1,
            )
        }
    };
    // What each run left: whether the file is back, seen before the next run resets it.
    let restored = std::cell::RefCell::new(Vec::new());
    let reset = |d: &Path| {
        if d.join("exchange.dat.old").exists() || d.join("exchange.dat").exists() {
            restored.borrow_mut().push(d.join("exchange.dat").exists());
        }
        with_exchange_file(d);
    };
    let (ours, theirs) = run_both(
        tmp.path(),
        "exchange-file.json",
        &runtime("default", "never"),
        &[],
        &reset,
        0,
    );
    let o = outcome(&ours);
    assert_eq!(o, ("completed".into(), false, vec![], vec![]), "{ours:#}");
    assert_eq!(ours["rollbacks"], serde_json::json!([]), "{ours:#}");
    reset(&data);
    let restored = restored.borrow().clone();
    assert!(
        restored.iter().all(|r| !r) && !restored.is_empty(),
        "no run put the file back: {restored:?}"
    );
    if let Some(t) = theirs {
        assert_eq!(outcome(&t), o, "chaostoolkit: {t:#}");
        assert_eq!(restored.len(), 2, "both tools ran: {restored:?}");
    }

    let source = std::fs::read_to_string(fixture("exchange-file.json")).unwrap();
    let bad = tmp.path().join("bad-runtime.json");
    std::fs::write(&bad, runtime("before-method-only", "deviated")(&source)).unwrap();
    let out = tmp.path().join("bad-out");
    let o = chaosbot(
        tmp.path(),
        &[
            "import",
            "chaostoolkit",
            bad.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert_eq!(o.status.code(), Some(64), "{err}");
    assert!(
        located(&err, "/runtime/hypothesis/strategy", "`before-method-only`"),
        "{err}"
    );
    assert!(
        located(&err, "/runtime/rollbacks/strategy", "`deviated`"),
        "{err}"
    );
    assert!(!out.exists(), "nothing may be written");
}

#[test]
fn the_walkthrough_hypothesis_deviates_in_both_on_the_jsonpath_probe() {
    let (tmp, data) = workdir();
    let svc = Service::start(&data);
    let front = format!("http://{}/", svc.addr);
    let (ours, theirs) = run_both(
        tmp.path(),
        "walkthrough-lab2.json",
        &|t| t.to_string(),
        &[("FRONT_URL", front.clone())],
        &with_exchange_file,
        1,
    );
    let expected = (
        "completed".to_string(),
        true,
        vec![],
        vec!["front-service-does-not-return-an-error".to_string()],
    );
    assert_eq!(outcome(&ours), expected, "{ours:#}");
    assert_eq!(ours["steady_states"]["after"]["steady_state_met"], false);
    assert_eq!(ours["rollbacks"][0]["activity"]["name"], "remove-the-error");
    assert!(
        !data.join("error.flag").exists(),
        "the rollback removed the error"
    );
    if let Some(t) = theirs {
        assert_eq!(outcome(&t), expected, "chaostoolkit: {t:#}");
    }
}

#[test]
fn a_process_probe_that_fails_before_the_method_stops_both_before_it() {
    let (tmp, _data) = workdir();
    let (ours, theirs) = run_both(
        tmp.path(),
        "ready-flag.yaml",
        &|t| t.to_string(),
        &[],
        &|_| {},
        2,
    );
    let expected = (
        "completed".to_string(),
        false,
        vec!["ready-flag-exists".to_string()],
        vec![],
    );
    assert_eq!(outcome(&ours), expected, "{ours:#}");
    assert_eq!(ours["run"], Value::Array(vec![]), "the method did not run");
    let toml = std::fs::read_to_string(tmp.path().join("imported/chaosbot.toml")).unwrap();
    assert!(
        toml.contains(r#"argv = ["test", "-f", "ready.flag"]"#),
        "{toml}"
    );
    assert!(toml.contains(r#"shell = "echo hello""#), "{toml}");
    if let Some(t) = theirs {
        assert_eq!(outcome(&t), expected, "chaostoolkit: {t:#}");
    }
}

/// What the background fixture leaves in the directory it ran in.
fn background_marks(d: &Path) -> [bool; 4] {
    ["bg.done", "seen.running", "still.running", "bg.running"].map(|f| d.join(f).exists())
}

fn clear_background_marks(d: &Path) {
    for f in ["bg.done", "seen.running", "still.running", "bg.running"] {
        let _ = std::fs::remove_file(d.join(f));
    }
}

#[test]
fn a_background_action_runs_beside_the_method_and_the_method_waits_for_it_in_both() {
    let (tmp, data) = workdir();
    let (ours, theirs) = run_both(
        tmp.path(),
        "background.yaml",
        &|t| t.to_string(),
        &[],
        &clear_background_marks,
        0,
    );
    let imported = std::fs::read_to_string(
        tmp.path()
            .join("imported/a-background-action-runs-beside-the-rest-of-the-method.yaml"),
    )
    .unwrap();
    assert!(imported.contains("parallel:"), "{imported}");
    assert!(imported.contains("sequence:"), "{imported}");
    let expected = ("completed".to_string(), false, vec![], vec![]);
    assert_eq!(outcome(&ours), expected, "{ours:#}");
    // Each tool ran in `data`, the last one being chaostoolkit when it is installed: check
    // chaosbot's marks from its own journal, the directory after the last run.
    let exit = |j: &Value, name: &str| -> Option<i64> {
        j["run"].as_array()?.iter().find_map(|r| {
            (r["activity"]["name"] == name).then(|| r["output"]["status"].as_i64())?
        })
    };
    assert_eq!(exit(&ours, "work-is-running"), Some(0), "{ours:#}");
    assert_eq!(exit(&ours, "after-the-probe"), Some(0), "{ours:#}");
    assert_eq!(exit(&ours, "long-background-work"), Some(0), "{ours:#}");
    if let Some(t) = &theirs {
        assert_eq!(outcome(t), expected, "chaostoolkit: {t:#}");
        assert_eq!(exit(t, "work-is-running"), Some(0), "chaostoolkit: {t:#}");
        assert_eq!(exit(t, "after-the-probe"), Some(0), "chaostoolkit: {t:#}");
    }
    assert_eq!(
        background_marks(&data),
        [true, true, true, false],
        "the background work ended; the probe and the action after it saw it running"
    );
}

/// Each problem line is `file:LINE:COL: /pointer: ...`.
fn located(stderr: &str, pointer: &str, needle: &str) -> bool {
    stderr.lines().any(|l| {
        let mut parts = l.splitn(4, ':');
        let (_, line, col, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
        line.is_some_and(|x| x.parse::<usize>().is_ok_and(|n| n > 0))
            && col.is_some_and(|x| x.parse::<usize>().is_ok())
            && rest.is_some_and(|r| r.trim_start().starts_with(pointer) && r.contains(needle))
    })
}

#[test]
fn bad_files_are_refused_per_activity_located_and_nothing_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    for (file, problems) in [
        (
            "walkthrough-lab1.json",
            vec![
                ("/steady-state-hypothesis/probes/1/provider", "`tolerances`"),
                ("/method/1/provider", "`chaosk8s.pod.actions`"),
                ("/method/3/provider", "`chaosk8s.pod.probes`"),
            ],
        ),
        (
            "bad-activities.json",
            vec![
                (
                    "/steady-state-hypothesis/probes/0/tolerance",
                    "has no tolerance",
                ),
                ("/method/0/provider/type", "unknown provider type `grpc`"),
                ("/method/1/ref", "`ref: no-such-activity` names no activity"),
                (
                    "/method/2/provider/func",
                    "`chaostoxi.toxic.actions.create_jitter_toxic` (activity `unknown-toxi-function`) is not a chaostoxi function",
                ),
                (
                    "/method/3/provider",
                    "neither `toxiproxy_url` nor `toxiproxy_host`",
                ),
            ],
        ),
    ] {
        let out = tmp.path().join(file);
        let o = chaosbot(
            tmp.path(),
            &[
                "import",
                "chaostoolkit",
                fixture(file).to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(o.status.code(), Some(64), "{file}: {err}");
        for (pointer, needle) in problems {
            assert!(
                located(&err, pointer, needle),
                "{file}: {pointer} {needle} in\n{err}"
            );
        }
        assert!(
            !err.contains("/background"),
            "{file}: background activities are imported: {err}"
        );
        assert!(err.contains("nothing was written"), "{err}");
        assert!(!out.exists(), "{file}: nothing may be written");
    }
}

/// One request to a loopback HTTP API (`Connection: close`): status and JSON body.
fn call(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap();
    let text = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(text).unwrap_or(Value::Null))
}

/// `chaosbot agent` serving Toxiproxy's API on `api` (the test's Toxiproxy server: none can
/// be installed here; the agent's API follows Toxiproxy's `api.go`).
struct ToxiServer {
    child: std::process::Child,
    api: SocketAddr,
}

impl ToxiServer {
    fn start(dir: &Path) -> ToxiServer {
        let api = crate::support::free_port();
        let d = dir.display();
        let cfg = dir.join("toxiproxy-server.toml");
        std::fs::write(
            &cfg,
            format!(
                "name = \"toxi\"\nsocket = \"{d}/toxi.sock\"\nsecret = \"s3cret-s3cret\"\nstate_dir = \"{d}/toxi-state\"\n[toxiproxy]\nlisten = \"{api}\"\n"
            ),
        )
        .unwrap();
        let child = Command::new(BIN)
            .args(["agent", "--config", cfg.to_str().unwrap()])
            .env_remove("CHAOSBOT_CONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("toxiproxy-server.log")).unwrap())
            .spawn()
            .unwrap();
        let server = ToxiServer { child, api };
        let started = std::time::Instant::now();
        while std::net::TcpStream::connect(api).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the Toxiproxy API did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    fn toxics(&self, proxy: &str) -> Vec<String> {
        let (status, t) = call(self.api, "GET", &format!("/proxies/{proxy}/toxics"), None);
        assert_eq!(status, 200, "{t}");
        t.as_array()
            .unwrap()
            .iter()
            .map(|x| x["name"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

impl Drop for ToxiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn chaostoxi_toxics_become_proxy_faults_and_both_deviate_on_the_one_left_to_the_rollbacks() {
    let (tmp, data) = workdir();
    let svc = Service::start(&data);
    let toxi = ToxiServer::start(tmp.path());
    let proxy = json_proxy(&toxi, svc.addr);
    let envs = [
        ("TOXIPROXY_PORT", toxi.api.port().to_string()),
        ("FRONT_URL", format!("http://{proxy}/")),
    ];
    // The toxics on the proxy before each run: before chaosbot's, then after it.
    let seen = std::sync::Mutex::new(Vec::new());
    let (ours, theirs) = run_both(
        tmp.path(),
        "toxi-latency.json",
        &|t| t.to_string(),
        &envs,
        &|d| {
            seen.lock().unwrap().push(toxi.toxics("front"));
            with_exchange_file(d)
        },
        1,
    );
    let seen = seen.into_inner().unwrap();
    assert_eq!(seen[0], Vec::<String>::new());
    assert_eq!(
        seen.get(1),
        theirs.as_ref().map(|_| &seen[0]),
        "chaosbot's run left no toxic behind"
    );
    let out = tmp.path().join("imported");
    let toml = std::fs::read_to_string(out.join("chaosbot.toml")).unwrap();
    assert!(
        toml.contains(&format!(
            "[[targets.proxy]]\nname = \"toxiproxy-front\"\ntoxiproxy = \"http://127.0.0.1:{}\"\nproxy = \"front\"",
            toxi.api.port()
        )),
        "{toml}"
    );
    let yaml = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "yaml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .unwrap();
    assert!(yaml.contains("during:"), "{yaml}");
    assert!(yaml.contains("revert: at_close"), "{yaml}");
    // The slowness the rollbacks remove is still there for the after round in both: its probe
    // gets no answer within its second, which Chaos Toolkit calls a failed, deviated run.
    let expected = (
        "failed".to_string(),
        true,
        vec![],
        vec!["front-answers-within-a-second".to_string()],
    );
    assert_eq!(outcome(&ours), expected, "{ours:#}");
    let took = |j: &Value, name: &str| -> Option<f64> {
        j["run"]
            .as_array()?
            .iter()
            .find_map(|r| (r["activity"]["name"] == name).then(|| r["duration"].as_f64())?)
    };
    // The probe between the brief toxic's creation and deletion went through it.
    let d = took(&ours, "front-during-brief-slowness").unwrap_or_default();
    assert!(
        d >= 0.3,
        "the probe took {d} s under a 300 ms latency: {ours:#}"
    );
    assert_eq!(
        ours["run"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["activity"]["name"] == "front-during-brief-slowness")
            .map(|r| r["output"]["status"].clone()),
        Some(Value::from(200)),
        "{ours:#}"
    );
    if let Some(t) = &theirs {
        assert_eq!(outcome(t), expected, "chaostoolkit: {t:#}");
        let d = took(t, "front-during-brief-slowness").unwrap_or_default();
        assert!(d >= 0.3, "chaostoolkit: {t:#}");
    }
    match &theirs {
        // Chaos Toolkit plays no rollbacks for a failed run: its toxic stays.
        Some(_) => assert_eq!(toxi.toxics("front"), vec!["slow".to_string()]),
        None => assert_eq!(toxi.toxics("front"), Vec::<String>::new()),
    }
}

/// Proxy `front` on the test's Toxiproxy server in front of `upstream`: where it listens.
fn json_proxy(toxi: &ToxiServer, upstream: SocketAddr) -> SocketAddr {
    let body = serde_json::json!({"name": "front", "listen": "127.0.0.1:0", "upstream": upstream.to_string()});
    let (status, made) = call(toxi.api, "POST", "/proxies", Some(&body));
    assert_eq!(status, 201, "{made}");
    made["listen"].as_str().unwrap().parse().unwrap()
}

/// Secrets from the environment: imported as an endpoint header and a shell reference, they
/// reach the service and the command in both tools (a wrong token deviates both before the
/// method), and the value is in no file chaosbot writes: the imported experiment and config,
/// the store, the exported journal.
#[test]
fn env_secrets_reach_the_service_in_both_and_are_written_nowhere() {
    let token = "tok-5ecret-93";
    for (given, exit, failing) in [
        (token, 0, vec![]),
        // Both stop the hypothesis at its first probe out of tolerance.
        ("tok-wrong", 2, vec!["private-api-answers".to_string()]),
    ] {
        let (tmp, data) = workdir();
        let svc = Service::start(&data);
        let url = format!("http://{}", svc.addr);
        let reset = |d: &Path| {
            std::fs::write(d.join("token.txt"), token).unwrap();
            std::fs::write(d.join("exchange.dat"), "data").unwrap();
        };
        let (ours, theirs) = run_both(
            tmp.path(),
            "secrets.json",
            &|t| t.replace("http://localhost:8080", &url),
            &[("CHAOSBOT_TEST_API_TOKEN", given.to_string())],
            &reset,
            exit,
        );
        let expected = ("completed".to_string(), false, failing.clone(), vec![]);
        assert_eq!(outcome(&ours), expected, "{ours:#}");
        if failing.is_empty() {
            assert_eq!(ours["run"][0]["status"], "succeeded", "{ours:#}");
            assert_eq!(ours["run"][0]["output"]["status"], 200, "{ours:#}");
        }
        if let Some(t) = theirs {
            assert_eq!(outcome(&t), expected, "chaostoolkit: {t:#}");
        }
        let toml = std::fs::read_to_string(tmp.path().join("imported/chaosbot.toml")).unwrap();
        assert!(
            toml.contains(r#"headers = { "Authorization" = "Bearer ${CHAOSBOT_TEST_API_TOKEN}" }"#),
            "{toml}"
        );
        assert!(toml.contains(r#""$CHAOSBOT_TEST_API_TOKEN""#), "{toml}");
        for f in [
            "imported",
            "runs.db",
            "runs.db-wal",
            "journal.json",
            "run.json",
        ] {
            let path = tmp.path().join(f);
            let files: Vec<PathBuf> = if path.is_dir() {
                std::fs::read_dir(&path)
                    .unwrap()
                    .map(|e| e.unwrap().path())
                    .collect()
            } else {
                vec![path]
            };
            for file in files {
                let bytes = std::fs::read(&file).unwrap_or_default();
                assert!(
                    !bytes.windows(given.len()).any(|w| w == given.as_bytes()),
                    "{} holds the secret",
                    file.display()
                );
            }
        }
    }
}

//! The harness itself, without an agent: a host is reachable over its link, `link_down` cuts
//! it and `link_up` restores it, commands run inside and die with their guard, and Drop leaves
//! nothing behind.

use std::process::Command;
use std::time::Duration;

use super::fixture::{fresh_client, timed_get, wait_until};
use super::netns::TestHost;
use chaosbot::faults::process::process_state;

fn ip_out(args: &[&str]) -> String {
    Command::new("ip")
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

const ECHO_PY: &str = r#"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer((sys.argv[1], 9000), H)
print("ready", flush=True)
s.serve_forever()
"#;

#[tokio::test]
async fn a_host_is_reached_over_its_link_which_the_test_can_cut() {
    let host = match TestHost::new() {
        Ok(h) => h,
        Err(why) => {
            eprintln!("SKIP: {why}");
            return;
        }
    };
    let other = TestHost::new().expect("a second host");
    assert_ne!(host.n, other.n, "each host has its own subnet");

    let mut py = Command::new("python3");
    py.args(["-c", ECHO_PY, &host.ip().to_string()]);
    let server = host.spawn(&py).expect("spawn a server inside");
    assert!(
        wait_until(Duration::from_secs(10), || server.log().contains("ready")),
        "server did not start: {}",
        server.log()
    );
    let url = format!("http://{}:9000/", host.ip());
    let client = fresh_client(Duration::from_millis(700));
    timed_get(&client, &url)
        .await
        .expect("reachable over the link");
    // The other host's address is not this one's: nothing listens there.
    let other_url = format!("http://{}:9000/", other.ip());
    assert!(timed_get(&client, &other_url).await.is_err());

    host.link_down();
    assert!(
        timed_get(&client, &url).await.is_err(),
        "a cut link carries nothing"
    );
    host.link_up();
    let mut back = false;
    for _ in 0..50 {
        if timed_get(&client, &url).await.is_ok() {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the link carries requests again after link_up");

    // A process inside: its pid is the command's own (signals reach it), Drop kills it.
    let mut sleep = Command::new("sleep");
    sleep.arg("600");
    let child = host.spawn(&sleep).expect("spawn sleep");
    let pid = child.pid();
    assert!(wait_until(Duration::from_secs(2), || {
        std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "sleep")
    }));
    child.signal(libc::SIGSTOP);
    assert!(wait_until(Duration::from_secs(2), || process_state(
        pid as i32
    ) == Some('T')));
    child.signal(libc::SIGCONT);
    assert!(wait_until(Duration::from_secs(2), || process_state(
        pid as i32
    ) != Some('T')));
    drop(child);
    assert!(
        process_state(pid as i32).is_none(),
        "killed and reaped on Drop"
    );

    let name = host.name.clone();
    drop(server);
    drop(host);
    assert!(
        !ip_out(&["netns", "list"]).contains(&name),
        "namespace gone"
    );
    assert!(
        !ip_out(&["-o", "link", "show"]).contains(&format!(" {name}@")),
        "veth gone"
    );
}

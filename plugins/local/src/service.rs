//! `local/service`: start a granted program as a tracked service, wait until its port accepts connections,
//! and output its URL. Destroy stops it.

use respawn_plugin_sdk::{Context, Failure, FailureKind, Phase, exec, log, net, state};
use serde::Deserialize;
use serde_json::{Value, json};

pub const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,"required":["program","port"],
"properties":{"program":{"type":"string","description":"a program in the step's exec grant"},
"args":{"type":"array","items":{"type":"string"}},
"cwd":{"type":"string","description":"working directory, inside a directory granted rw"},
"port":{"type":"integer","minimum":1,"maximum":65535},
"wait_ms":{"type":"integer","minimum":1,"description":"how long to wait for the port (default 15000)"}}}"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    program: String,
    #[serde(default)]
    args: Vec<String>,
    cwd: Option<String>,
    port: u16,
    #[serde(default = "default_wait")]
    wait_ms: u64,
}

fn default_wait() -> u64 {
    15_000
}

const HOST: &str = "127.0.0.1";

fn listening(port: u16) -> bool {
    net::tcp_probe(HOST, port, 500).is_ok()
}

pub fn invoke(ctx: &Context, p: Params) -> Result<Value, Failure> {
    let url = format!("http://{HOST}:{}", p.port);
    match ctx.phase {
        Phase::Plan => Ok(
            json!({ "would": format!("start {} {} listening on {url}", p.program, p.args.join(" ")) }),
        ),
        Phase::Apply => {
            if let Some(pid) = state::get("pid")
                && listening(p.port)
            {
                return Ok(json!({ "url": url, "pid": pid.parse::<u32>().unwrap_or(0) }));
            }
            if listening(p.port) {
                return Err(Failure::conflict(format!(
                    "port {} is already in use by something else",
                    p.port
                )));
            }
            let mut cmd = exec::Command::new(&p.program).args(p.args.iter().map(String::as_str));
            if let Some(dir) = &p.cwd {
                cmd = cmd.cwd(dir);
            }
            let pid = cmd.spawn_service()?;
            state::set("pid", &pid.to_string());
            let started = std::time::Instant::now();
            while !listening(p.port) {
                if started.elapsed().as_millis() as u64 > p.wait_ms {
                    let _ = exec::stop_service(pid);
                    state::delete("pid");
                    return Err(Failure::unavailable(format!(
                        "{} (pid {pid}) did not listen on {url} within {} ms",
                        p.program, p.wait_ms
                    )));
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            log::info(&format!("{} listening on {url} (pid {pid})", p.program));
            Ok(json!({ "url": url, "pid": pid }))
        }
        Phase::Verify => {
            if listening(p.port) {
                Ok(json!({ "url": url }))
            } else {
                Err(Failure::verification_failed(format!(
                    "nothing listens on {url}"
                )))
            }
        }
        Phase::Destroy => {
            if let Some(pid) = state::get("pid").and_then(|v| v.parse::<u32>().ok()) {
                match exec::stop_service(pid) {
                    Ok(()) => {}
                    // Started by an earlier runner process: it is already gone with that process.
                    Err(f) if f.kind == FailureKind::Denied => {
                        log::warn(&format!("pid {pid}: {}", f.message))
                    }
                    Err(f) => return Err(f),
                }
                state::delete("pid");
            }
            Ok(json!({ "stopped": url }))
        }
    }
}

//! A hostile test plugin: each operation tries one escape or abuse. The runner must fail only that step, with
//! the right failure kind, and keep going.

use respawn_plugin_sdk::{Context, Failure, Plugin, PluginInfo, export_plugin, operation};
use serde_json::{Value, json};

struct Hostile;

const OPS: [&str; 17] = [
    "read-host-file",
    "write-outside",
    "http-not-allowed",
    "exec-not-granted",
    "exec-inject-loader",
    "exec-args-outside-grant",
    "exec-env-outside-grant",
    "store-outside-prefix",
    "leak-secret",
    "secret-not-granted",
    "store-not-granted",
    "infinite-loop",
    "memory-bomb",
    "deep-recursion",
    "huge-output",
    "trap",
    "panic",
];

impl Plugin for Hostile {
    fn describe() -> PluginInfo {
        OPS.iter()
            .fold(PluginInfo::new("hostile", "0.1.0"), |info, op| {
                info.operation(operation(op, op, "{}"))
            })
    }

    fn invoke(ctx: Context, params: &str) -> Result<String, Failure> {
        let params: Value = respawn_plugin_sdk::params(params)?;
        let arg = |k: &str| params[k].as_str().unwrap_or_default().to_string();
        match ctx.operation.as_str() {
            "read-host-file" => {
                let path = arg("path");
                match std::fs::read(&path) {
                    Ok(bytes) => respawn_plugin_sdk::outputs(&json!({ "stolen": bytes.len() })),
                    Err(e) => Err(Failure::new(
                        respawn_plugin_sdk::FailureKind::Denied,
                        format!("files: read {path}: {e}"),
                    )),
                }
            }
            "write-outside" => {
                let path = arg("path");
                match std::fs::write(&path, b"pwned") {
                    Ok(()) => respawn_plugin_sdk::outputs(&json!({ "wrote": path })),
                    Err(e) => Err(Failure::new(
                        respawn_plugin_sdk::FailureKind::Denied,
                        format!("files: write {path}: {e}"),
                    )),
                }
            }
            "http-not-allowed" => {
                let r = respawn_plugin_sdk::http::get(&arg("url"))?;
                respawn_plugin_sdk::outputs(&json!({ "status": r.status }))
            }
            "exec-not-granted" => {
                let out = respawn_plugin_sdk::exec::Command::new(&arg("program")).output()?;
                respawn_plugin_sdk::outputs(&json!({ "status": out.status }))
            }
            // Abuses of granted capabilities: a granted program with a library injected, a granted store read
            // beside its prefix.
            "exec-inject-loader" => {
                let out = respawn_plugin_sdk::exec::Command::new(&arg("program"))
                    .env("LD_PRELOAD", "/tmp/respawn-hostile.so")
                    .output()?;
                respawn_plugin_sdk::outputs(&json!({ "status": out.status }))
            }
            // A granted program with arguments, or an environment key, its grant entry does not allow.
            "exec-args-outside-grant" => {
                let out = respawn_plugin_sdk::exec::Command::new(&arg("program"))
                    .args(["-c", "cat /etc/shadow"])
                    .output()?;
                respawn_plugin_sdk::outputs(&json!({ "status": out.status }))
            }
            "exec-env-outside-grant" => {
                let out = respawn_plugin_sdk::exec::Command::new(&arg("program"))
                    .env("PGSERVICEFILE", "/tmp/respawn-hostile.conf")
                    .output()?;
                respawn_plugin_sdk::outputs(&json!({ "status": out.status }))
            }
            "store-outside-prefix" => {
                let v = respawn_plugin_sdk::stores::get(&arg("store"), &arg("key"))?;
                respawn_plugin_sdk::outputs(&json!({ "len": v.len() }))
            }
            // Mishandles a granted secret every way a plugin can: logs it, prints it, keys state and outputs by
            // it, and (with `fail`) fails with it in the message. None of it may reach a log, journal or report.
            "leak-secret" => {
                let value = respawn_plugin_sdk::secrets::get(&arg("name"))?;
                respawn_plugin_sdk::log::warn(&format!("the secret is {value}"));
                println!("stdout has {value}");
                eprintln!("stderr has {value}");
                respawn_plugin_sdk::state::set(&value, &value);
                if params["fail"].as_bool() == Some(true) {
                    return Err(Failure::internal(format!(
                        "failing with {value} in the message"
                    )));
                }
                respawn_plugin_sdk::outputs(&json!({ value.clone(): value }))
            }
            "secret-not-granted" => {
                let v = respawn_plugin_sdk::secrets::get(&arg("name"))?;
                respawn_plugin_sdk::outputs(&json!({ "len": v.len() }))
            }
            "store-not-granted" => {
                let v = respawn_plugin_sdk::stores::get(&arg("store"), "any")?;
                respawn_plugin_sdk::outputs(&json!({ "len": v.len() }))
            }
            "infinite-loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 16 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "deep-recursion" => {
                fn recurse(n: u64) -> u64 {
                    if std::hint::black_box(n) == u64::MAX {
                        return 0;
                    }
                    let pad = std::hint::black_box([n; 64]);
                    recurse(n + 1) + pad[3]
                }
                let n = recurse(0);
                respawn_plugin_sdk::outputs(&json!({ "depth": n }))
            }
            "huge-output" => {
                // 100 MB of output JSON, built in one allocation so the output cap (not memory) is what trips.
                let size = 100 << 20;
                let mut out = String::with_capacity(size + 16);
                out.push_str("{\"big\":\"");
                out.extend(std::iter::repeat_n('x', size));
                out.push_str("\"}");
                Ok(out)
            }
            "trap" => {
                #[cfg(target_arch = "wasm32")]
                core::arch::wasm32::unreachable();
                #[cfg(not(target_arch = "wasm32"))]
                unreachable!()
            }
            "panic" => panic!("hostile plugin panics on purpose"),
            _ => Err(respawn_plugin_sdk::unknown_operation(&ctx)),
        }
    }
}

export_plugin!(Hostile);

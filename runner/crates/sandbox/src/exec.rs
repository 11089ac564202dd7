//! The exec capability: only programs the step's `exec` grant names, exactly; never in the plan phase. Services
//! are started through it too, and a step may stop only services its run started.

use crate::{Capability, Declared, Denial, Problem};

pub struct Exec;

impl Capability for Exec {
    const NAME: &'static str = "exec";
    type Grant = Vec<String>;

    fn validate(grant: &Self::Grant, _: &Declared<'_>) -> Vec<Problem> {
        grant
            .iter()
            .enumerate()
            .filter(|(_, program)| {
                let bare = !program.is_empty() && !program.contains('/');
                !bare && !program.starts_with('/')
            })
            .map(|(i, program)| {
                Problem::at(
                    format!("exec[{i}]"),
                    format!(
                        "exec grant `{program}` must be a program name found on PATH or an absolute path"
                    ),
                )
            })
            .collect()
    }
}

/// Whether a step with `grant` may run (or start as a service) `program`; `read_only` in the plan phase.
pub fn check(grant: &[String], program: &str, read_only: bool) -> Result<(), Denial> {
    if read_only {
        return Err(Denial::new(
            Exec::NAME,
            format!("`{program}`: the plan phase may not run programs"),
        ));
    }
    if !grant.iter().any(|g| g == program) {
        return Err(Denial::new(
            Exec::NAME,
            format!("program `{program}` is not in the step's exec grant"),
        ));
    }
    Ok(())
}

/// Environment variables a plugin may not set for a program: they would change which program, or which code, runs
/// (`PATH` is the host's; the dynamic loader's `LD_*` and `DYLD_*` inject libraries).
pub fn check_env<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<(), Denial> {
    for key in keys {
        let upper = key.to_ascii_uppercase();
        if upper == "PATH" || upper.starts_with("LD_") || upper.starts_with("DYLD_") {
            return Err(Denial::new(
                Exec::NAME,
                format!(
                    "environment variable `{key}` may not be set by a plugin: it would change which program or \
                     code runs"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a step may stop a service now: never in the plan phase.
pub fn check_stop(pid: u32, read_only: bool) -> Result<(), Denial> {
    if read_only {
        return Err(Denial::new(
            Exec::NAME,
            format!("stop pid {pid}: the plan phase may not stop services"),
        ));
    }
    Ok(())
}

/// The refusal to stop a process this run did not start: the host never signals a process it did not start.
pub fn not_started_here(pid: u32) -> Denial {
    Denial::new(
        Exec::NAME,
        format!("stop pid {pid}: not a service started by this run"),
    )
}

/// The refusal of a working directory outside every directory granted `rw`.
pub fn cwd_not_granted(dir: &str) -> Denial {
    Denial::new(
        Exec::NAME,
        format!("working directory {dir} is not inside a directory granted rw"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plugin_cannot_choose_the_loader_or_the_path() {
        for key in [
            "PATH",
            "path",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "DYLD_INSERT_LIBRARIES",
        ] {
            let denial = check_env([key]).unwrap_err();
            assert_eq!(denial.capability, "exec");
            assert!(denial.asked.contains(key), "{denial}");
        }
        assert!(check_env(["PGPASSFILE", "HOME", "LANG", "MY_LD_FLAG"]).is_ok());
    }
}

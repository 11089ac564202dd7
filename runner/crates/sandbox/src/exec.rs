//! The exec capability: only programs the step's `exec` grant names, exactly; never in the plan phase. Services
//! are started through it too, and a step may stop only services its run started. A grant entry may name the OS
//! user a program runs as (`{ program: postgres, user: postgres }`): the host switches to it, so a plugin never
//! chooses a user and a workflow never needs `su` or `sudo`. An entry may also narrow what a plugin passes: the
//! environment keys it may set (`env`) and the shapes its arguments must have (`args`).

use serde::{Deserialize, Serialize};

use crate::{Capability, Declared, Denial, Problem};

pub struct Exec;

/// One entry of an `exec` grant: a program, written as its name alone or with the user it runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ExecGrant {
    Program(String),
    As(ProgramAs),
}

impl<'de> Deserialize<'de> for ExecGrant {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<ExecGrant, D::Error> {
        struct Entry;
        impl<'de> serde::de::Visitor<'de> for Entry {
            type Value = ExecGrant;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a program name, or { program: NAME, user: USER, env: [KEY], args: [PATTERN] }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<ExecGrant, E> {
                Ok(ExecGrant::Program(v.to_string()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<ExecGrant, A::Error> {
                let entry =
                    ProgramAs::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(ExecGrant::As(entry))
            }
        }
        d.deserialize_any(Entry)
    }
}

/// `{ program, user, env, args }`: all but `program` optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProgramAs {
    pub program: String,
    /// An OS user name the program runs as (the runner must be root to switch to another user).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// The only environment keys a plugin may set for this program (never `PATH`, `LD_*`, `DYLD_*`); any key
    /// but those when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    /// Patterns every argument must match one of (`*` any run of characters, `?` one character, the rest
    /// literally); any argument when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Vec<String>>,
}

impl ExecGrant {
    pub fn program(&self) -> &str {
        match self {
            ExecGrant::Program(p) => p,
            ExecGrant::As(a) => &a.program,
        }
    }
    pub fn user(&self) -> Option<&str> {
        match self {
            ExecGrant::Program(_) => None,
            ExecGrant::As(a) => a.user.as_deref(),
        }
    }
    /// The environment keys a plugin may set, when the entry narrows them.
    pub fn env(&self) -> Option<&[String]> {
        match self {
            ExecGrant::Program(_) => None,
            ExecGrant::As(a) => a.env.as_deref(),
        }
    }
    /// The argument patterns, when the entry narrows them.
    pub fn args(&self) -> Option<&[String]> {
        match self {
            ExecGrant::Program(_) => None,
            ExecGrant::As(a) => a.args.as_deref(),
        }
    }
}

impl From<String> for ExecGrant {
    fn from(program: String) -> ExecGrant {
        ExecGrant::Program(program)
    }
}

impl From<&str> for ExecGrant {
    fn from(program: &str) -> ExecGrant {
        ExecGrant::Program(program.to_string())
    }
}

impl Capability for Exec {
    const NAME: &'static str = "exec";
    type Grant = Vec<ExecGrant>;

    fn validate(grant: &Self::Grant, _: &Declared<'_>) -> Vec<Problem> {
        let mut problems = Vec::new();
        for (i, entry) in grant.iter().enumerate() {
            let program = entry.program();
            let bare = !program.is_empty() && !program.contains('/');
            if !bare && !program.starts_with('/') {
                problems.push(Problem::at(
                    format!("exec[{i}]"),
                    format!("exec grant `{program}` must be a program name found on PATH or an absolute path"),
                ));
            }
            if let Some(user) = entry.user()
                && !valid_user(user)
            {
                problems.push(Problem::at(
                    format!("exec[{i}].user"),
                    format!("`{user}` is not a user name (letters, digits, `_`, `-`, starting with a letter or `_`)"),
                ));
            }
            for (k, key) in entry.env().unwrap_or_default().iter().enumerate() {
                let name_ok = !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    && !key.as_bytes()[0].is_ascii_digit();
                if !name_ok {
                    problems.push(Problem::at(
                        format!("exec[{i}].env[{k}]"),
                        format!(
                            "`{key}` is not an environment variable name (letters, digits, `_`)"
                        ),
                    ));
                } else if let Err(denial) = check_env(None, [key.as_str()]) {
                    problems.push(Problem::at(format!("exec[{i}].env[{k}]"), denial.asked));
                }
            }
            for (k, pattern) in entry.args().unwrap_or_default().iter().enumerate() {
                if pattern.is_empty() {
                    problems.push(Problem::at(
                        format!("exec[{i}].args[{k}]"),
                        "an argument pattern may not be empty; `*` matches any argument"
                            .to_string(),
                    ));
                }
            }
            if grant[..i].iter().any(|e| e.program() == program) {
                problems.push(Problem::at(
                    format!("exec[{i}]"),
                    format!("program `{program}` is granted twice; give it once, with the user it runs as"),
                ));
            }
        }
        problems
    }
}

fn valid_user(user: &str) -> bool {
    let mut chars = user.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        && user.len() <= 32
}

/// The user the grant runs `program` as, when it names one.
pub fn user_of<'a>(grant: &'a [ExecGrant], program: &str) -> Option<&'a str> {
    grant
        .iter()
        .find(|e| e.program() == program)
        .and_then(ExecGrant::user)
}

/// Whether the step may act as `user` outside exec (e.g. own what it unpacks): only as a user its exec grant runs
/// a program as.
pub fn check_user(grant: &[ExecGrant], user: &str, read_only: bool) -> Result<(), Denial> {
    if read_only {
        return Err(Denial::new(
            Exec::NAME,
            format!("user `{user}`: the plan phase may not write"),
        ));
    }
    if grant.iter().any(|e| e.user() == Some(user)) {
        Ok(())
    } else {
        Err(Denial::new(
            Exec::NAME,
            format!("user `{user}` is not a user the step's exec grant runs a program as"),
        ))
    }
}

/// Whether a step with `grant` may run (or start as a service) `program` with `args` and the environment keys
/// `env_keys`; `read_only` in the plan phase.
pub fn check<'a>(
    grant: &[ExecGrant],
    program: &str,
    args: &[String],
    env_keys: impl IntoIterator<Item = &'a str>,
    read_only: bool,
) -> Result<(), Denial> {
    if read_only {
        return Err(Denial::new(
            Exec::NAME,
            format!("`{program}`: the plan phase may not run programs"),
        ));
    }
    let Some(entry) = grant.iter().find(|g| g.program() == program) else {
        return Err(Denial::new(
            Exec::NAME,
            format!("program `{program}` is not in the step's exec grant"),
        ));
    };
    check_env(entry.env(), env_keys)?;
    if let Some(patterns) = entry.args()
        && let Some((i, arg)) = args
            .iter()
            .enumerate()
            .find(|(_, arg)| !patterns.iter().any(|p| glob_matches(p, arg)))
    {
        return Err(Denial::new(
            Exec::NAME,
            format!(
                "`{program}` argument {i} `{}` matches none of the grant's argument patterns",
                arg.escape_debug()
            ),
        ));
    }
    Ok(())
}

/// Environment variables a plugin may set for a program: never those that would change which program, or which
/// code, runs (`PATH` is the host's; the dynamic loader's `LD_*` and `DYLD_*` inject libraries), and only the keys
/// the grant entry names (`allowed`) when it names any.
pub fn check_env<'a>(
    allowed: Option<&[String]>,
    keys: impl IntoIterator<Item = &'a str>,
) -> Result<(), Denial> {
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
        if let Some(allowed) = allowed
            && !allowed.iter().any(|a| a == key)
        {
            return Err(Denial::new(
                Exec::NAME,
                format!(
                    "environment variable `{key}` is not one the exec grant lets the plugin set"
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `text` matches `pattern` whole: `*` any run of characters (`/` included), `?` one character, anything
/// else itself. Written here rather than taken from a crate because this crate is compiled into every plugin
/// through the SDK's mock host and stays dependency-free; greedy backtracking on the last `*` keeps it linear
/// in practice (O(pattern × text) at worst).
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || (p[pi] != '*' && p[pi] == t[ti])) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
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
            let denial = check_env(None, [key]).unwrap_err();
            assert_eq!(denial.capability, "exec");
            assert!(denial.asked.contains(key), "{denial}");
        }
        assert!(check_env(None, ["PGPASSFILE", "HOME", "LANG", "MY_LD_FLAG"]).is_ok());
    }

    #[test]
    fn an_entry_that_names_env_keys_admits_only_those() {
        let grant: Vec<ExecGrant> =
            serde_json::from_str(r#"[{ "program": "psql", "env": ["PGPASSWORD"] }]"#).unwrap();
        assert!(check(&grant, "psql", &[], ["PGPASSWORD"], false).is_ok());
        let denial =
            check(&grant, "psql", &[], ["PGPASSWORD", "PGSERVICEFILE"], false).unwrap_err();
        assert_eq!(denial.capability, "exec");
        assert!(denial.asked.contains("`PGSERVICEFILE`"), "{denial}");
        // Naming LD_PRELOAD in the grant does not make it settable: validation refuses the grant.
        let bad: Vec<ExecGrant> =
            serde_json::from_str(r#"[{ "program": "x", "env": ["LD_PRELOAD", "1X", "OK"] }]"#)
                .unwrap();
        let declared = Declared {
            stores: &[],
            secrets: &[],
        };
        let at: Vec<String> = Exec::validate(&bad, &declared)
            .into_iter()
            .map(|p| p.at)
            .collect();
        assert_eq!(at, ["exec[0].env[0]", "exec[0].env[1]"]);
    }

    #[test]
    fn an_entry_that_names_argument_patterns_admits_only_matching_arguments() {
        let grant: Vec<ExecGrant> = serde_json::from_str(
            r#"[{ "program": "pg_ctl", "args": ["-D", "/srv/pg/*", "start", "stop", "-m", "fast"] }]"#,
        )
        .unwrap();
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let ok = args(&["-D", "/srv/pg/data", "start"]);
        assert!(check(&grant, "pg_ctl", &ok, [], false).is_ok());
        let bad = args(&["-D", "/etc", "start"]);
        let denial = check(&grant, "pg_ctl", &bad, [], false).unwrap_err();
        assert!(denial.asked.contains("argument 1 `/etc`"), "{denial}");
        // Without patterns any argument passes.
        let open: Vec<ExecGrant> = serde_json::from_str(r#"["pg_ctl"]"#).unwrap();
        assert!(check(&open, "pg_ctl", &bad, [], false).is_ok());
    }

    #[test]
    fn glob_patterns_match_whole_arguments() {
        for (p, t, want) in [
            ("*", "", true),
            ("*", "anything/at all", true),
            ("a*c", "abbbc", true),
            ("a*c", "abbbcd", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("--port=*", "--port=5432", true),
            ("--port=*", "-port=5432", false),
            ("*.sql", "a.sql.gz", false),
            ("*b*b*", "abab", true),
            ("exact", "exactly", false),
        ] {
            assert_eq!(glob_matches(p, t), want, "{p} vs {t}");
        }
    }

    #[test]
    fn a_grant_entry_may_name_the_user_a_program_runs_as() {
        let grant: Vec<ExecGrant> = serde_json::from_str(
            r#"["psql", { "program": "/usr/lib/postgresql/15/bin/postgres", "user": "postgres" }]"#,
        )
        .unwrap();
        assert!(
            check(
                &grant,
                "/usr/lib/postgresql/15/bin/postgres",
                &[],
                [],
                false
            )
            .is_ok()
        );
        assert_eq!(
            user_of(&grant, "/usr/lib/postgresql/15/bin/postgres"),
            Some("postgres")
        );
        assert_eq!(user_of(&grant, "psql"), None);
        assert!(check_user(&grant, "postgres", false).is_ok());
        let denial = check_user(&grant, "root", false).unwrap_err();
        assert!(denial.asked.contains("user `root`"), "{denial}");
        let twice: Vec<ExecGrant> =
            serde_json::from_str(r#"["psql", { "program": "psql", "user": "postgres" }, { "program": "x", "user": "Bad User" }]"#)
                .unwrap();
        let problems = Exec::validate(
            &twice,
            &Declared {
                stores: &[],
                secrets: &[],
            },
        );
        let at: Vec<&str> = problems.iter().map(|p| p.at.as_str()).collect();
        assert_eq!(at, ["exec[1]", "exec[2].user"]);
    }
}

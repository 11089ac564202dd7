//! `respawn fleet k8s`: the Kubernetes Indexed Job that runs a fleet, one pod per member at a time
//! (docs/fleet.md explains it line by line).
//!
//! Kubernetes schedules, restarts and parallelises; respawn only has to make a restarted pod find its member's
//! run. The pod failure policy reads respawn's exit codes: 1 (the member's run failed) and 2 (its workflow or
//! the fleet is invalid) fail the index at once, since running it again cannot help; 3 (interrupted,
//! resumable), a crash or a kill count against `backoffLimitPerIndex` and start the index again, where `fleet
//! run` resumes it. An eviction or preemption (`DisruptionTarget`) does not count.

use std::path::PathBuf;

use clap::Args;
use serde_json::{Value, json};

use super::super::run as runs;
use super::super::{Usage, exit};

#[derive(Debug, Args)]
pub struct K8sArgs {
    /// The fleet file.
    pub fleet: PathBuf,
    /// The runner image: respawn, the fleet file and its member workflows (docs/fleet.md shows how to build it).
    #[arg(long)]
    pub image: String,
    /// The state store every member shares; never with credentials in it (they come from --secret).
    #[arg(long, env = "RESPAWN_STATE")]
    pub state: String,
    /// The fleet run's id (default: a new one). Every pod of the Job runs this fleet run.
    #[arg(long, value_name = "ID")]
    pub fleet_run: Option<String>,
    /// The Kubernetes Secret whose keys become the pods' environment: the state store's credentials and the
    /// variables the member workflows' `secrets:` read. Referenced, never copied into the manifest.
    #[arg(long, value_name = "NAME", default_value = "respawn-fleet")]
    pub secret: String,
    /// Where the fleet file is inside the image.
    #[arg(long, value_name = "PATH", default_value = "/fleet/fleet.yaml")]
    pub fleet_path: String,
    /// Members running at once (the Job's parallelism; default all, at most 10).
    #[arg(long, value_name = "K")]
    pub parallel: Option<usize>,
    /// Restarts of one member after a crash, kill or exit 3 (backoffLimitPerIndex).
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub retries: u32,
    #[arg(long, default_value = "500m")]
    pub cpu: String,
    #[arg(long, default_value = "1Gi")]
    pub memory: String,
    #[arg(long)]
    pub namespace: Option<String>,
    #[arg(long)]
    pub service_account: Option<String>,
    /// Seconds a pod has to tear down its drill after SIGTERM (terminationGracePeriodSeconds).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub grace: u32,
    /// Confirm the approval gates of failover members (a pod has no terminal to ask on).
    #[arg(long)]
    pub yes: bool,
    /// Write the manifest here instead of stdout.
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: K8sArgs) -> anyhow::Result<u8> {
    let loaded = super::load_checked(&args.fleet)?;
    check_no_credentials(&args.state)?;
    let fleet_run = args.fleet_run.clone().unwrap_or_else(runs::new_run_id);
    super::check_fleet_run_id(&fleet_run)?;
    let members = loaded.fleet.members.len();
    let parallel = args.parallel.unwrap_or(members.min(10));
    if parallel == 0 {
        return Err(Usage("--parallel must be at least 1".into()).into());
    }
    let manifest = manifest(&args, &loaded, &fleet_run, parallel);
    let mut text = format!(
        "# respawn fleet {} {}: {members} members, fleet run {fleet_run}.\n\
         # kubectl apply -f this; `respawn fleet report {fleet_run} --state {}` reports on it.\n",
        loaded.fleet.fleet, loaded.fleet.version, args.state
    );
    text.push_str(&serde_yaml::to_string(&manifest)?);
    match &args.out {
        Some(path) => {
            std::fs::write(path, text)?;
            eprintln!("wrote {} (fleet run {fleet_run})", path.display());
        }
        None => out_raw!("{text}"),
    }
    Ok(exit::OK)
}

/// Refuses a state URL that carries credentials: the manifest is committed and shared, the Secret is not.
fn check_no_credentials(url: &str) -> Result<(), Usage> {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?']).next().unwrap_or("");
    let query = url
        .split_once('?')
        .map_or("", |(_, q)| q)
        .to_ascii_lowercase();
    let secretish = ["sig=", "secret", "token", "password", "key=", "sas"];
    if authority.contains('@') || secretish.iter().any(|s| query.contains(s)) {
        return Err(Usage(format!(
            "--state `{}` holds credentials; give the bare URL and put the credentials in the Kubernetes Secret \
             named by --secret (for S3: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)",
            without_credentials(url)
        )));
    }
    Ok(())
}

/// `url` with its user part and query left out, to name it in a message without repeating a credential.
fn without_credentials(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let rest = rest.split('?').next().unwrap_or("");
    let rest = match rest.split_once('/') {
        Some((authority, path)) => format!("{}/{path}", authority.rsplit('@').next().unwrap_or("")),
        None => rest.rsplit('@').next().unwrap_or("").to_string(),
    };
    format!("{scheme}://{rest}?…")
}

/// A DNS-1123 name for the Job, at most 52 characters so that its pods' names fit: `respawn-FLEET-RUNSUFFIX`.
fn job_name(fleet: &str, fleet_run: &str) -> String {
    let clean = |s: &str| -> String {
        s.to_ascii_lowercase()
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect()
    };
    let suffix = clean(&fleet_run[fleet_run.len().saturating_sub(6)..]);
    let mut fleet = clean(fleet);
    fleet.truncate(52 - "respawn--".len() - suffix.len());
    format!("respawn-{}-{suffix}", fleet.trim_matches('-'))
        .replace("--", "-")
        .trim_matches('-')
        .to_string()
}

fn manifest(
    args: &K8sArgs,
    loaded: &respawn::workflow::fleet::LoadedFleet,
    fleet_run: &str,
    parallel: usize,
) -> Value {
    let name = job_name(&loaded.fleet.fleet, fleet_run);
    let labels = json!({
        "app.kubernetes.io/name": "respawn",
        "app.kubernetes.io/component": "fleet",
        "respawn.dev/fleet": loaded.fleet.fleet,
        "respawn.dev/fleet-run": fleet_run,
    });
    let mut command_args = vec![
        "fleet".to_string(),
        "run".into(),
        args.fleet_path.clone(),
        "--no-progress".into(),
        "--expect-sha256".into(),
        loaded.sha256.clone(),
    ];
    if args.yes {
        command_args.push("--yes".into());
    }
    let mut metadata = json!({
        "name": name,
        "labels": labels,
        "annotations": {
            "respawn.dev/fleet-version": loaded.fleet.version,
            "respawn.dev/fleet-sha256": loaded.sha256,
        },
    });
    if let Some(ns) = &args.namespace {
        metadata["namespace"] = json!(ns);
    }
    let mut pod_spec = json!({
        "restartPolicy": "Never",
        "terminationGracePeriodSeconds": args.grace,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": { "type": "RuntimeDefault" },
        },
        "containers": [{
            "name": "respawn",
            "image": args.image,
            "command": ["respawn"],
            "args": command_args,
            "workingDir": "/work",
            "env": [
                { "name": "RESPAWN_FLEET_RUN", "value": fleet_run },
                { "name": "RESPAWN_STATE", "value": args.state },
                { "name": "HOME", "value": "/work" },
            ],
            "envFrom": [{ "secretRef": { "name": args.secret } }],
            "resources": {
                "requests": { "cpu": args.cpu, "memory": args.memory },
                "limits": { "memory": args.memory },
            },
            "securityContext": {
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "capabilities": { "drop": ["ALL"] },
            },
            "volumeMounts": [
                { "name": "work", "mountPath": "/work" },
                { "name": "tmp", "mountPath": "/tmp" },
            ],
        }],
        "volumes": [{ "name": "work", "emptyDir": {} }, { "name": "tmp", "emptyDir": {} }],
    });
    if let Some(account) = &args.service_account {
        pod_spec["serviceAccountName"] = json!(account);
    }
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        "spec": {
            "completionMode": "Indexed",
            "completions": loaded.fleet.members.len(),
            "parallelism": parallel,
            "backoffLimitPerIndex": args.retries,
            "podReplacementPolicy": "Failed",
            "podFailurePolicy": {
                "rules": [
                    {
                        "action": "FailIndex",
                        "onExitCodes": { "containerName": "respawn", "operator": "In", "values": [1, 2] },
                    },
                    {
                        "action": "Ignore",
                        "onPodConditions": [{ "type": "DisruptionTarget", "status": "True" }],
                    },
                ],
            },
            "template": {
                "metadata": { "labels": labels },
                "spec": pod_spec,
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_are_dns_labels_that_leave_room_for_pod_names() {
        let n = job_name("EU_west.prod", "20261202T101010-a1b2c3");
        assert_eq!(n, "respawn-eu-west-prod-a1b2c3");
        let long = job_name(&"x".repeat(63), "20261202T101010-a1b2c3");
        assert!(long.len() <= 52, "{long}");
        assert!(long.ends_with("-a1b2c3"));
    }

    #[test]
    fn a_state_url_with_credentials_is_refused() {
        assert!(check_no_credentials("s3://dr-state/respawn").is_ok());
        assert!(check_no_credentials("file:///var/state").is_ok());
        for bad in [
            "https://acct.blob.core.windows.net/c?sv=2024&sig=abc",
            "s3://AKIA:secret@bucket/x",
            "az://c/x?access_key=abc",
        ] {
            let e = check_no_credentials(bad).unwrap_err().to_string();
            assert!(e.contains("--secret"), "{e}");
            assert!(!e.contains("abc"), "a credential was echoed: {e}");
        }
    }
}

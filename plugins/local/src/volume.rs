//! `local/volume`: restore a stored OCI image into `<root>/<region>/<env>/<name>`.

use respawn_plugin_sdk::{Context, Failure, Phase, images, state};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::Place;

pub const SCHEMA: &str = r#"{"type":"object","additionalProperties":false,
"required":["store","image","tag","root","region","env","name"],
"properties":{"store":{"type":"string","description":"granted store holding the image layout"},
"image":{"type":"string","description":"key prefix of the OCI image layout in the store"},
"tag":{"type":"string"},"root":{"type":"string"},"region":{"type":"string"},"env":{"type":"string"},
"name":{"type":"string"}}}"#;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    store: String,
    image: String,
    tag: String,
    #[serde(flatten)]
    place: Place,
}

pub fn invoke(ctx: &Context, p: Params) -> Result<Value, Failure> {
    p.place.check()?;
    let path = p.place.path();
    match ctx.phase {
        Phase::Plan => {
            Ok(json!({ "would": format!("restore {}:{}@{} into {path}", p.store, p.image, p.tag) }))
        }
        Phase::Apply => {
            // Idempotent: a completed restore of this path is not repeated.
            if let Some(done) = state::get("outputs")
                && std::fs::metadata(&path).is_ok()
            {
                return serde_json::from_str(&done)
                    .map_err(|e| Failure::internal(format!("state: {e}")));
            }
            // Record the target before creating it, so destroy finds it even if the restore is cut off.
            state::set("path", &path);
            p.place.remove()?;
            let restored = images::unpack(&p.store, &p.image, &p.tag, &path)?;
            let out = json!({
                "path": path,
                "manifest_digest": restored.manifest_digest,
                "files": restored.files,
                "bytes": restored.bytes,
                "created": restored.created,
            });
            state::set("outputs", &out.to_string());
            Ok(out)
        }
        Phase::Verify => {
            let compared = images::compare(&p.store, &p.image, &p.tag, &path)?;
            if !compared.mismatches.is_empty() {
                let shown: Vec<&str> = compared
                    .mismatches
                    .iter()
                    .take(10)
                    .map(String::as_str)
                    .collect();
                return Err(Failure::verification_failed(format!(
                    "{} of {} files in {path} differ from {}:{}@{}: {}",
                    compared.mismatches.len(),
                    compared.checked,
                    p.store,
                    p.image,
                    p.tag,
                    shown.join(", ")
                )));
            }
            Ok(json!({ "path": path, "checked": compared.checked }))
        }
        Phase::Destroy => {
            p.place.remove_and_prune()?;
            state::delete("outputs");
            Ok(json!({ "removed": path }))
        }
    }
}

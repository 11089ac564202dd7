//! The JSON Schema of each operation's params, as `respawn plugin inspect builtin:aws@0.1` shows them.

/// Params every operation takes, merged into each operation's `properties`.
const CONNECTION: &str = r#"
    "region": { "type": "string", "description": "the target region, e.g. us-west-2 (dns-failover: us-east-1, Route 53 is global)" },
    "endpoint": { "type": "string", "description": "endpoint override for every API call: moto, a VPC endpoint (http(s)://host[:port])" },
    "credentials": { "type": "object", "additionalProperties": false,
      "description": "names of granted secrets holding the keys",
      "properties": {
        "access_key_secret": { "type": "string", "default": "AWS_ACCESS_KEY_ID" },
        "secret_key_secret": { "type": "string", "default": "AWS_SECRET_ACCESS_KEY" },
        "session_token_secret": { "type": "string" } } },
    "wait_seconds": { "type": "integer", "minimum": 1, "default": 3600, "description": "longest wait for AWS to finish" },"#;

const TAGS: &str = r#""tags": { "type": "object", "additionalProperties": { "type": "string" }, "description": "extra tags" }"#;

/// (name, description, schema with `CONNECTION` spliced in at `@CONNECTION@`).
pub const OPERATIONS: &[(&str, &str, &str)] = &[
    (
        "copy-image",
        "Copy an AMI and its snapshots from a source region to the target region",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["region", "source_region", "image"], "additionalProperties": false,
  "properties": {@CONNECTION@
    "source_region": { "type": "string" },
    "image": { "type": "string", "description": "the AMI id in the source region" },
    "name": { "type": "string", "description": "the copy's name; default: the source's name + -dr- + a token of the run" },
    "description": { "type": "string" },
    "encrypted": { "type": "boolean", "default": false },
    "kms_key_id": { "type": "string" },
    @TAGS@
  }
}"#,
    ),
    (
        "launch",
        "Run instances from an image in the target region and wait until they run",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["region", "image", "instance_type"], "additionalProperties": false,
  "properties": {@CONNECTION@
    "image": { "type": "string", "description": "AMI id in the target region" },
    "instance_type": { "type": "string" },
    "count": { "type": "integer", "minimum": 1, "maximum": 100, "default": 1 },
    "subnet": { "type": "string" },
    "security_groups": { "type": "array", "items": { "type": "string" } },
    "user_data": { "type": "string", "description": "plain text; sent base64-encoded" },
    "key_name": { "type": "string" },
    "instance_ids": { "type": "array", "items": { "type": "string" }, "description": "verify: the instances to check (the apply step's output)" },
    @TAGS@
  }
}"#,
    ),
    (
        "rds-restore",
        "Restore a DB instance to a point in time, or promote a cross-region read replica, in the target region",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["region", "identifier"], "additionalProperties": false,
  "properties": {@CONNECTION@
    "mode": { "enum": ["point-in-time", "promote-replica"], "default": "point-in-time" },
    "identifier": { "type": "string", "description": "the DB instance to create (point-in-time) or the replica to promote" },
    "source": { "type": "string", "description": "point-in-time: the source DB instance in the target region, or the ARN of its automated backups replicated there" },
    "restore_time": { "type": "string", "format": "date-time", "description": "default: the latest restorable time" },
    "instance_class": { "type": "string" },
    "subnet_group": { "type": "string" },
    "security_groups": { "type": "array", "items": { "type": "string" } },
    "multi_az": { "type": "boolean" },
    @TAGS@
  }
}"#,
    ),
    (
        "dns-failover",
        "Point a Route 53 record at the DR endpoint; a drill's teardown puts the saved record set back",
        r#"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object", "required": ["zone_id", "name", "values"], "additionalProperties": false,
  "properties": {@CONNECTION@
    "zone_id": { "type": "string" },
    "name": { "type": "string" },
    "type": { "type": "string", "default": "A" },
    "ttl": { "type": "integer", "minimum": 0, "default": 60 },
    "values": { "type": "array", "minItems": 1, "items": { "type": "string" } },
    "routing": { "enum": ["simple", "weighted", "failover"], "default": "simple" },
    "set_identifier": { "type": "string" },
    "weight": { "type": "integer", "minimum": 0, "maximum": 255 },
    "failover": { "enum": ["PRIMARY", "SECONDARY"] },
    "health_check": { "type": "object", "required": ["type", "port"], "additionalProperties": false,
      "properties": { "type": { "enum": ["HTTP", "HTTPS", "TCP"] }, "ip": { "type": "string" },
        "fqdn": { "type": "string" }, "port": { "type": "integer" }, "path": { "type": "string" },
        "failure_threshold": { "type": "integer", "minimum": 1, "maximum": 10 } } }
  }
}"#,
    ),
];

/// An operation's schema with the shared params spliced in.
pub fn with_connection(schema: &str) -> String {
    schema
        .replace("@CONNECTION@", CONNECTION)
        .replace("@TAGS@", TAGS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_schema_is_json() {
        for (name, _, schema) in super::OPERATIONS {
            let text = super::with_connection(schema);
            serde_json::from_str::<serde_json::Value>(&text)
                .unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        }
    }
}

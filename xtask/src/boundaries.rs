//! The architecture's dependency rules, checked from `cargo metadata` on every `cargo xtask test`.
//! Each rule's `doc` line must appear verbatim in ARCHITECTURE.md, so the document and the check
//! cannot drift apart.

use std::collections::{BTreeSet, HashMap};

use anyhow::{Context, bail};
use serde_json::Value;

pub struct Rule {
    pub krate: &'static str,
    /// Crate names (or prefixes ending in `-`/`_`) it must not reach through normal dependencies.
    pub forbidden: &'static [&'static str],
    pub doc: &'static str,
}

const RUNTIMES: &[&str] = &["tokio", "axum", "hyper", "rusqlite", "aws-", "lambda_"];

pub const RULES: &[Rule] = &[
    Rule {
        krate: "firstcome-core",
        forbidden: RUNTIMES,
        doc: "Architecture invariant: `firstcome-core` depends on no async runtime, web framework, database or AWS crate (tokio, axum, hyper, rusqlite, aws-*, lambda_*).",
    },
    Rule {
        krate: "firstcome-wire",
        forbidden: &["tokio", "axum", "hyper", "rusqlite", "aws-", "lambda_", "firstcome-"],
        doc: "Architecture invariant: `firstcome-wire` depends on serde and time only (utoipa behind its `openapi` feature): no runtime, no framework, no other firstcome crate, so a WASM page can use it.",
    },
    Rule {
        krate: "firstcome-api",
        forbidden: &["firstcome-store-", "rusqlite", "aws-sdk-"],
        doc: "Architecture invariant: `firstcome-api` (the router) depends on no store crate: stores reach it only as `Arc<dyn Port>`.",
    },
    Rule {
        krate: "firstcome-store-dynamo",
        forbidden: &["aws-sdk-sqs", "lambda_", "axum", "firstcome-api", "firstcome-aws"],
        doc: "Architecture invariant: `firstcome-store-dynamo` is DynamoDB only: no SQS, no Lambda runtime, no router; the issuance queue reaches it as `Arc<dyn IssuanceQueue>`.",
    },
    Rule {
        krate: "firstcome-local",
        forbidden: &["aws-", "lambda_", "firstcome-store-dynamo", "firstcome-aws"],
        doc: "Architecture invariant: `firstcome-local` needs no AWS crate: local mode builds and runs with no cloud SDK at all.",
    },
    Rule {
        krate: "firstcome-guard",
        forbidden: &["axum", "hyper", "rusqlite", "aws-", "lambda_", "firstcome-store-", "firstcome-api"],
        doc: "Architecture invariant: `firstcome-guard` (admission, timeouts, breaker) wraps the store ports and nothing else: no HTTP, no store crate, no AWS; the same guard runs in the local server and the Lambdas.",
    },
    Rule {
        krate: "firstcome-ticket",
        forbidden: &["tokio", "axum", "hyper", "rusqlite", "aws-", "lambda_", "firstcome-", "serde", "time", "rand"],
        doc: "Architecture invariant: `firstcome-ticket` (the claim ticket's hash) depends on `sha2` only, so the engine that verifies a ticket and the page and load tool that solve one hash exactly the same bytes.",
    },
    Rule {
        krate: "firstcome-frontend",
        forbidden: &[
            "tokio",
            "axum",
            "hyper",
            "rusqlite",
            "aws-",
            "lambda_",
            "firstcome-core",
            "firstcome-api",
            "firstcome-store-",
            "firstcome-local",
        ],
        doc: "Architecture invariant: `firstcome-frontend` (the page) knows the server only through `firstcome-wire` (and solves claim tickets with `firstcome-ticket`): no other firstcome crate, no server runtime or framework.",
    },
];

/// Runs `cargo metadata` and checks every rule; also that ARCHITECTURE.md states each one.
pub fn check(architecture_md: &str) -> anyhow::Result<()> {
    let out = crate::cargo()
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .context("running cargo metadata")?;
    if !out.status.success() {
        bail!("cargo metadata failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("parsing cargo metadata")?;
    let mut problems = violations(&metadata, RULES)?;
    for rule in RULES {
        if !architecture_md.contains(rule.doc) {
            problems.push(format!("ARCHITECTURE.md does not state: {}", rule.doc));
        }
    }
    if !problems.is_empty() {
        bail!("architecture boundaries broken:\n  {}", problems.join("\n  "));
    }
    eprintln!("xtask> {} architecture boundaries hold", RULES.len());
    Ok(())
}

/// Every (crate, forbidden dependency, path) the resolved graph shows, following normal
/// (non-dev, non-build) edges only.
pub fn violations(metadata: &Value, rules: &[Rule]) -> anyhow::Result<Vec<String>> {
    let packages = metadata["packages"].as_array().context("metadata.packages")?;
    let name_of: HashMap<&str, &str> =
        packages.iter().filter_map(|p| Some((p["id"].as_str()?, p["name"].as_str()?))).collect();
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for node in metadata["resolve"]["nodes"].as_array().context("metadata.resolve.nodes")? {
        let id = node["id"].as_str().context("node id")?;
        for dep in node["deps"].as_array().into_iter().flatten() {
            let normal = dep["dep_kinds"].as_array().into_iter().flatten().any(|k| k["kind"].is_null());
            if normal && let Some(pkg) = dep["pkg"].as_str() {
                edges.entry(id).or_default().push(pkg);
            }
        }
    }
    let mut problems = Vec::new();
    for rule in rules {
        let Some(root) = name_of.iter().find(|(_, n)| **n == rule.krate).map(|(id, _)| *id) else {
            problems.push(format!("{} is not in the workspace", rule.krate));
            continue;
        };
        // Breadth-first from the crate, remembering how each dependency was reached.
        let mut via: HashMap<&str, &str> = HashMap::new();
        let mut queue = vec![root];
        let mut seen = BTreeSet::from([root]);
        while let Some(id) = queue.pop() {
            for &dep in edges.get(id).into_iter().flatten() {
                if seen.insert(dep) {
                    via.insert(dep, id);
                    queue.push(dep);
                }
            }
        }
        for &id in seen.iter().filter(|id| **id != root) {
            let name = name_of.get(id).copied().unwrap_or(id);
            let hit = rule
                .forbidden
                .iter()
                .any(|f| if f.ends_with('-') || f.ends_with('_') { name.starts_with(f) } else { name == *f });
            if hit {
                let mut path = vec![name];
                let mut at = id;
                while let Some(&parent) = via.get(at) {
                    path.push(name_of.get(parent).copied().unwrap_or(parent));
                    at = parent;
                }
                path.reverse();
                problems.push(format!("{} reaches {name}: {}", rule.krate, path.join(" -> ")));
            }
        }
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(edges: &[(&str, &str, Option<&str>)]) -> Value {
        // Every ruled crate exists (without dependencies unless the edges give some).
        let names: BTreeSet<&str> =
            edges.iter().flat_map(|(a, b, _)| [*a, *b]).chain(RULES.iter().map(|r| r.krate)).collect();
        let packages: Vec<Value> = names.iter().map(|n| json!({"id": n, "name": n})).collect();
        let nodes: Vec<Value> = names
            .iter()
            .map(|n| {
                let deps: Vec<Value> = edges
                    .iter()
                    .filter(|(a, _, _)| a == n)
                    .map(|(_, b, kind)| json!({"pkg": b, "dep_kinds": [{"kind": kind}]}))
                    .collect();
                json!({"id": n, "deps": deps})
            })
            .collect();
        json!({"packages": packages, "resolve": {"nodes": nodes}})
    }

    #[test]
    fn a_transitive_runtime_dependency_is_caught_and_dev_dependencies_are_not() {
        let m = metadata(&[
            ("firstcome-core", "futures", None),
            ("futures", "tokio-util", None),
            ("tokio-util", "tokio", None),
            ("firstcome-core", "axum", Some("dev")),
            ("firstcome-wire", "serde", None),
            ("firstcome-api", "firstcome-core", None),
            ("firstcome-frontend", "firstcome-wire", None),
        ]);
        let found = violations(&m, RULES).unwrap();
        assert_eq!(found, ["firstcome-core reaches tokio: firstcome-core -> futures -> tokio-util -> tokio"]);
    }

    #[test]
    fn the_router_may_not_reach_a_store() {
        let m = metadata(&[
            ("firstcome-core", "serde", None),
            ("firstcome-wire", "serde", None),
            ("firstcome-api", "firstcome-store-sqlite", None),
            ("firstcome-frontend", "firstcome-wire", None),
        ]);
        assert_eq!(violations(&m, RULES).unwrap().len(), 1);
    }

    #[test]
    fn the_page_may_not_reach_the_engine() {
        let m = metadata(&[
            ("firstcome-core", "serde", None),
            ("firstcome-wire", "serde", None),
            ("firstcome-api", "firstcome-core", None),
            ("firstcome-frontend", "firstcome-core", None),
        ]);
        assert_eq!(
            violations(&m, RULES).unwrap(),
            ["firstcome-frontend reaches firstcome-core: firstcome-frontend -> firstcome-core"]
        );
    }
}

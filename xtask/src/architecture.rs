//! Keeps `docs/ARCHITECTURE.md` true: the table of internal crate edges between its
//! `crate-graph` markers must be exactly what `cargo metadata` reports.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::Path;
    use std::process::Command;

    /// Crate → (normal dependencies, dev-dependencies), internal crates only.
    type Graph = BTreeMap<String, (BTreeSet<String>, BTreeSet<String>)>;

    fn workspace_root() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives in the workspace root")
    }

    fn from_cargo_metadata() -> Graph {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let output = Command::new(cargo)
            .args([
                "metadata",
                "--format-version",
                "1",
                "--no-deps",
                "--offline",
            ])
            .current_dir(workspace_root())
            .output()
            .expect("cargo metadata runs");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let metadata: serde_json::Value =
            serde_json::from_slice(&output.stdout).expect("cargo metadata prints JSON");
        let packages = metadata["packages"].as_array().expect("packages");
        let names: BTreeSet<String> = packages
            .iter()
            .filter_map(|p| p["name"].as_str().map(str::to_owned))
            .collect();
        let mut graph = Graph::new();
        for package in packages {
            let name = package["name"].as_str().expect("name").to_owned();
            let entry = graph.entry(name).or_default();
            for dependency in package["dependencies"].as_array().expect("dependencies") {
                let target = dependency["name"].as_str().expect("dependency name");
                if !names.contains(target) {
                    continue;
                }
                if dependency["kind"].as_str() == Some("dev") {
                    entry.1.insert(target.to_owned());
                } else {
                    entry.0.insert(target.to_owned());
                }
            }
        }
        graph
    }

    fn from_architecture_doc() -> Graph {
        let text = std::fs::read_to_string(workspace_root().join("docs/ARCHITECTURE.md"))
            .expect("docs/ARCHITECTURE.md");
        let start = text
            .find("<!-- crate-graph:start -->")
            .expect("start marker");
        let end = text.find("<!-- crate-graph:end -->").expect("end marker");
        let list = |text: &str| -> BTreeSet<String> {
            text.split(',')
                .map(str::trim)
                .filter(|name| !name.is_empty())
                .map(str::to_owned)
                .collect()
        };
        let mut graph = Graph::new();
        for line in text[start..end].lines().filter(|l| l.starts_with("| ")) {
            let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
            let [name, edges] = cells[..] else {
                panic!("a row has two cells: {line}")
            };
            if name == "crate" || name.starts_with("---") {
                continue;
            }
            let (normal, dev) = match edges.split_once('[') {
                Some((normal, dev)) => (normal, dev.trim_end_matches(']')),
                None => (edges, ""),
            };
            graph.insert(name.to_owned(), (list(normal), list(dev)));
        }
        graph
    }

    #[test]
    fn architecture_doc_matches_cargo_metadata() {
        let actual = from_cargo_metadata();
        assert!(actual.contains_key("chat-domain"), "{actual:?}");
        let documented = from_architecture_doc();
        assert_eq!(
            documented, actual,
            "docs/ARCHITECTURE.md's crate graph (left) differs from cargo metadata (right)"
        );
    }
}

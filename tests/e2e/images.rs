//! Image management through the real CLI, without a guest: tag, rmi, images, inspect, history,
//! prune, load, save, import and `system check`, with skopeo as the outside reader and writer.
//! Images come from COPY-only builds (which run on the host) and from `kiln import`.

mod harness;

use harness::{assert_clean_error, text, TestEnv};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "kiln failed:\nstdout:\n{}\nstderr:\n{}", text(&out.stdout), text(&out.stderr));
    text(&out.stdout)
}

/// Builds a COPY-only image (no guest needed) named `tag` with busybox and `extra` files.
fn build_copy_image(env: &TestEnv, tag: &str, dockerfile: &str) -> String {
    let ctx = env.context(&format!("ctx-{}", tag.replace([':', '/'], "-")), dockerfile, &[("note.txt", tag)], true);
    ok(&env.kiln(&["build", "-q", "-t", tag, ctx.to_str().expect("utf8")])).trim().to_string()
}

const BASE: &str = "FROM scratch\nCOPY busybox /bin/busybox\nCMD [\"/bin/busybox\", \"sh\"]\n";

fn inspect(env: &TestEnv, image: &str) -> serde_json::Value {
    let out = ok(&env.kiln(&["inspect", image]));
    let v: serde_json::Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0].clone()
}

#[test]
fn tag_rmi_images_inspect_history_prune() {
    let env = TestEnv::new("imgmgmt");
    let id = build_copy_image(&env, "base:1", BASE);
    let child = build_copy_image(&env, "child", "FROM base:1\nCOPY note.txt /note.txt\nENV A=b\n");
    ok(&env.kiln(&["tag", "base:1", "registry.example:5000/team/base:v1"]));

    let listing = ok(&env.kiln(&["images"]));
    assert!(listing.starts_with("REPOSITORY"), "{listing}");
    for needle in ["base ", "registry.example:5000/team/base ", "child ", &id[7..19]] {
        assert!(listing.contains(needle), "{needle:?} missing from:\n{listing}");
    }
    let quiet = ok(&env.kiln(&["image", "ls", "-q"]));
    assert_eq!(quiet.lines().count(), 2, "one line per image id:\n{quiet}");
    let filtered = ok(&env.kiln(&["images", "--filter", "reference=registry.example*"]));
    assert_eq!(filtered.lines().count(), 2, "{filtered}");
    let json = ok(&env.kiln(&["images", "--format", "json", "--digests"]));
    for line in json.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("json line");
        assert!(v["ID"].is_string() && v["Repository"].is_string() && v["Digest"].as_str().is_some_and(|d| d.starts_with("sha256:")));
    }

    let base = inspect(&env, "base:1");
    assert_eq!(base["Id"], id.as_str());
    assert_eq!(base["RepoTags"], serde_json::json!(["base:1", "registry.example:5000/team/base:v1"]));
    assert_eq!(base["Os"], "linux");
    assert_eq!(base["Config"]["Cmd"], serde_json::json!(["/bin/busybox", "sh"]));
    assert_eq!(base["RootFS"]["Layers"].as_array().map(Vec::len), Some(1));
    assert!(base["Size"].as_u64().is_some_and(|s| s > 100_000));
    let by_id = inspect(&env, &child[7..19]);
    assert_eq!(by_id["RepoTags"], serde_json::json!(["child:latest"]));

    let history = ok(&env.kiln(&["history", "child"]));
    let rows: Vec<&str> = history.lines().collect();
    assert!(rows[0].contains("CREATED BY"), "{history}");
    assert!(rows[1].starts_with(&child[7..19]) && rows[1].contains("ENV A=b") && rows[1].contains(" 0B "), "{history}");
    assert!(history.contains("<missing>"), "{history}");
    assert_eq!(ok(&env.kiln(&["history", "-q", "--no-trunc", "child"])).lines().next(), Some(child.as_str()));

    // By id with names in two repositories: refused without -f; a parent cannot go at all.
    assert_clean_error(&env.kiln(&["rmi", &id[7..19]]), "referenced in multiple repositories");
    assert_clean_error(&env.kiln(&["rmi", "-f", &id[7..19]]), "dependent child images");
    assert_clean_error(&env.kiln(&["rmi", "ghost"]), "no such image: ghost");
    // By name: untag only while other names or children remain.
    let out = ok(&env.kiln(&["rmi", "registry.example:5000/team/base:v1"]));
    assert_eq!(out.trim(), "Untagged: registry.example:5000/team/base:v1");
    let out = ok(&env.kiln(&["image", "rm", "base:1"]));
    assert_eq!(out.trim(), "Untagged: base:1", "the parent of child stays as an intermediate image");
    assert!(!ok(&env.kiln(&["images"])).contains(&id[7..19]), "intermediate images are hidden");
    assert!(ok(&env.kiln(&["images", "-a"])).contains(&id[7..19]), "-a shows them");

    // Deleting the child leaves the former parent dangling; prune takes it and its blobs.
    let out = ok(&env.kiln(&["rmi", "child"]));
    assert!(out.contains("Untagged: child:latest") && out.contains(&format!("Deleted: {child}")), "{out}");
    assert!(ok(&env.kiln(&["images", "--filter", "dangling=true", "-q"])).contains(&id[7..19]));
    let out = ok(&env.kiln(&["image", "prune", "-f"]));
    assert!(out.contains(&format!("deleted: {id}")) && out.contains("Total reclaimed space: 1."), "{out}");
    assert_eq!(ok(&env.kiln(&["images", "-a", "-q"])), "");
    let blobs = std::fs::read_dir(env.root.join("blobs/sha256")).expect("blobs").count();
    assert_eq!(blobs, 0, "every blob was unreferenced");
}

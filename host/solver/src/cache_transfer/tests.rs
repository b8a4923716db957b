//! The cache artifact format, the layout directory and the import's checks, through real
//! stores.

use std::fs;
use std::io::Write;
use std::path::Path;

use kiln_store::image::RunConfig;
use kiln_store::{LayerInfo, NewImage, Store};

use super::layout::{self, LocalLayout, REF_NAME};
use super::*;

fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, *data).expect("append");
    }
    b.into_inner().expect("tar")
}

/// A tar whose only entry escapes the layer (`../evil`), which no tar builder writes.
fn hostile_tar() -> Vec<u8> {
    let mut h = tar::Header::new_old();
    let name = b"../evil";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut bytes = h.as_bytes().to_vec();
    bytes.extend_from_slice(&[0u8; 1024]);
    bytes
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: Store,
    /// k1 -> l1 (in the image), k2 -> l2 (only in the cache), k3 -> no layer.
    keys: Vec<CacheKey>,
    l1: LayerInfo,
    l2: LayerInfo,
    image: Digest,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path().join("a")).expect("store");
    let l1 = store.ingest_layer(tar_of(&[("one", b"1")]).as_slice()).expect("layer 1");
    let l2 = store.ingest_layer(tar_of(&[("two", b"22")]).as_slice()).expect("layer 2");
    let image = store.write_image(new_image(vec![l1.clone()])).expect("image");
    let base = CacheKey::base("scratch");
    let keys = vec![base.child(&["COPY", "one"]), base.child(&["RUN", "two"]), base.child(&["RUN", "nothing"])];
    let cache = CacheIndex::new(&store);
    cache.put(&keys[0], &Cached::Layer(l1.clone())).expect("put");
    cache.put(&keys[1], &Cached::Layer(l2.clone())).expect("put");
    cache.put(&keys[2], &Cached::Empty).expect("put");
    Fixture { _dir: dir, store, keys, l1, l2, image }
}

fn new_image(layers: Vec<LayerInfo>) -> NewImage {
    NewImage {
        layers,
        config: RunConfig::default(),
        history: vec![],
        created: "2026-01-01T00:00:00Z".into(),
        architecture: "amd64".into(),
        os: "linux".into(),
        author: None,
        variant: None,
    }
}

fn empty_store(f: &Fixture, name: &str) -> Store {
    Store::open(f._dir.path().join(name)).expect("store")
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("read")).expect("json")
}

#[test]
fn export_is_an_oci_layout_with_the_records_in_the_image_config() {
    let f = fixture();
    let art = collect(&f.store, &f.keys, ExportMode::Max, &f.image).expect("collect");
    let dir = f._dir.path().join("out");
    layout::write(&f.store, &art, &dir, "latest").expect("write");

    assert_eq!(fs::read_to_string(dir.join("oci-layout")).expect("oci-layout"), "{\"imageLayoutVersion\":\"1.0.0\"}");
    let index = json(&dir.join("index.json"));
    let entry = &index["manifests"][0];
    assert_eq!(index["manifests"].as_array().map(Vec::len), Some(1));
    assert_eq!(entry["mediaType"], OCI_MANIFEST);
    assert_eq!(entry["artifactType"], ARTIFACT_TYPE);
    assert_eq!(entry["annotations"][REF_NAME], "latest");
    // Every blob file is named by its content's digest.
    for e in fs::read_dir(dir.join("blobs/sha256")).expect("blobs") {
        let e = e.expect("entry");
        let bytes = fs::read(e.path()).expect("blob");
        assert_eq!(Digest::of(&bytes).hex(), e.file_name().to_string_lossy());
    }
    let manifest = json(&dir.join("blobs/sha256").join(entry["digest"].as_str().expect("digest").trim_start_matches("sha256:")));
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["artifactType"], ARTIFACT_TYPE);
    assert_eq!(manifest["config"]["mediaType"], OCI_CONFIG);
    let layers: Vec<String> = manifest["layers"].as_array().expect("layers").iter().map(|l| l["digest"].as_str().expect("d").to_string()).collect();
    assert_eq!(layers, vec![f.l1.digest.to_string(), f.l2.digest.to_string()]);
    assert_eq!(manifest["layers"][0]["mediaType"], "application/vnd.oci.image.layer.v1.tar+gzip");
    let config = json(&dir.join("blobs/sha256").join(art.config_digest.hex()));
    // A valid image config: os, architecture, one diff id per layer.
    assert_eq!(config["os"], "linux");
    assert_eq!(config["rootfs"]["type"], "layers");
    assert_eq!(config["rootfs"]["diff_ids"], serde_json::json!([f.l1.diff_id.to_string(), f.l2.diff_id.to_string()]));
    let records = &config["kiln.buildcache"]["records"];
    assert_eq!(config["kiln.buildcache"]["version"], 1);
    assert_eq!(*records, serde_json::json!([
        {"key": f.keys[0].as_str(), "layer": 0},
        {"key": f.keys[1].as_str(), "layer": 1},
        {"key": f.keys[2].as_str(), "layer": null},
    ]));
    assert_eq!(art.records, 3);
}

#[test]
fn min_mode_keeps_only_the_final_images_layers() {
    let f = fixture();
    let min = collect(&f.store, &f.keys, ExportMode::Min, &f.image).expect("min");
    assert_eq!(min.layers.iter().map(|l| l.digest.clone()).collect::<Vec<_>>(), vec![f.l1.digest.clone()]);
    assert_eq!(min.records, 2, "k1 and the layerless k3");
    let max = collect(&f.store, &f.keys, ExportMode::Max, &f.image).expect("max");
    assert_eq!(max.layers.len(), 2);
    // Same inputs, same artifact: exports are reproducible.
    let again = collect(&f.store, &f.keys, ExportMode::Max, &f.image).expect("max again");
    assert_eq!(again.descriptor.digest, max.descriptor.digest);
    // Keys whose records are gone are left out rather than failing the export.
    let mut keys = f.keys.clone();
    keys.push(CacheKey::base("scratch").child(&["RUN", "never recorded"]));
    assert_eq!(collect(&f.store, &keys, ExportMode::Max, &f.image).expect("collect").records, 3);
}

#[test]
fn import_into_an_empty_store_gives_hits() {
    let f = fixture();
    let art = collect(&f.store, &f.keys, ExportMode::Max, &f.image).expect("collect");
    let dir = f._dir.path().join("out");
    layout::write(&f.store, &art, &dir, "latest").expect("write");
    let b = empty_store(&f, "b");
    let report = import(&b, &LocalLayout::new(&dir, None)).expect("import");
    assert_eq!((report.added, report.present, report.fetched), (3, 0, 2), "{report:?}");
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    assert_eq!(report.bytes, f.l1.size + f.l2.size);
    let cache = CacheIndex::new(&b);
    assert_eq!(cache.get(&f.keys[0]), Some(Cached::Layer(f.l1.clone())));
    assert_eq!(cache.get(&f.keys[1]), Some(Cached::Layer(f.l2.clone())));
    assert_eq!(cache.get(&f.keys[2]), Some(Cached::Empty));
    // The blobs are pinned by the records: garbage collection keeps them.
    let lock = b.lock().expect("lock");
    b.collect_garbage(&lock).expect("gc");
    drop(lock);
    assert!(b.has_blob(&f.l1.digest) && b.has_blob(&f.l2.digest));
    // Importing again changes nothing.
    let again = import(&b, &LocalLayout::new(&dir, None)).expect("import again");
    assert_eq!((again.added, again.present, again.fetched), (0, 3, 0));
    // Nothing left behind in the staging area.
    assert_eq!(fs::read_dir(b.root().join("ingest")).expect("ingest").count(), 0);
}

#[test]
fn a_tampered_blob_is_rejected_and_only_its_records_skipped() {
    let f = fixture();
    let art = collect(&f.store, &f.keys, ExportMode::Max, &f.image).expect("collect");
    let dir = f._dir.path().join("out");
    layout::write(&f.store, &art, &dir, "latest").expect("write");
    // Same size, one byte changed.
    let victim = dir.join("blobs/sha256").join(f.l2.digest.hex());
    let mut bytes = fs::read(&victim).expect("read");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&victim, &bytes).expect("tamper");
    let b = empty_store(&f, "b");
    let report = import(&b, &LocalLayout::new(&dir, None)).expect("import");
    assert_eq!(report.added, 2, "{report:?}");
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains(&f.l2.digest.to_string()) && report.warnings[0].contains("not"), "{}", report.warnings[0]);
    assert!(!b.has_blob(&f.l2.digest), "a rejected blob must not reach the store");
    let cache = CacheIndex::new(&b);
    assert_eq!(cache.get(&f.keys[1]), None);
    assert_eq!(cache.get(&f.keys[0]), Some(Cached::Layer(f.l1.clone())));
    // Exporting again repairs the damaged file.
    layout::write(&f.store, &art, &dir, "latest").expect("rewrite");
    assert_eq!(Digest::of(&fs::read(&victim).expect("read")), f.l2.digest);
    // A truncated blob is refused by its size.
    fs::write(&victim, &bytes[..10]).expect("truncate");
    let c = empty_store(&f, "c");
    let report = import(&c, &LocalLayout::new(&dir, None)).expect("import");
    assert!(report.warnings.len() == 1 && report.warnings[0].contains("10 bytes"), "{:?}", report.warnings);
}

#[test]
fn layers_that_lie_or_escape_are_rejected() {
    let f = fixture();
    // An attacker's store: a record claiming another layer's diff id, and a layer whose tar
    // escapes its root (stored as a raw blob, which a real ingest would have refused).
    let evil = f.store.write_blob(&hostile_tar()).expect("evil blob");
    let evil_info = LayerInfo { digest: evil.clone(), diff_id: evil.clone(), size: hostile_tar().len() as u64 };
    let liar = LayerInfo { diff_id: f.l1.diff_id.clone(), ..f.l2.clone() };
    let cache = CacheIndex::new(&f.store);
    let base = CacheKey::base("scratch");
    let keys = vec![base.child(&["evil"]), base.child(&["liar"]), f.keys[0].clone()];
    cache.put(&keys[0], &Cached::Layer(evil_info)).expect("put");
    cache.put(&keys[1], &Cached::Layer(liar)).expect("put");
    let art = collect(&f.store, &keys, ExportMode::Max, &f.image).expect("collect");
    let dir = f._dir.path().join("out");
    layout::write(&f.store, &art, &dir, "latest").expect("write");
    let b = empty_store(&f, "b");
    let report = import(&b, &LocalLayout::new(&dir, None)).expect("import");
    assert_eq!(report.added, 1, "only the honest record: {report:?}");
    let all = report.warnings.join("\n");
    assert!(all.contains("..") && all.contains("diff id"), "{all}");
    assert!(!b.has_blob(&evil) && !b.has_blob(&f.l2.digest));
}

/// Writes `manifest` (and `config`) as the only entry of a layout in `dir`.
fn custom_layout(dir: &Path, manifest: &serde_json::Value, config: &[u8]) {
    fs::create_dir_all(dir.join("blobs/sha256")).expect("mkdir");
    fs::write(dir.join("blobs/sha256").join(Digest::of(config).hex()), config).expect("config");
    let m = serde_json::to_vec(manifest).expect("json");
    let md = Digest::of(&m);
    fs::write(dir.join("blobs/sha256").join(md.hex()), &m).expect("manifest");
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{"mediaType": OCI_MANIFEST, "digest": md.to_string(), "size": m.len()}]});
    fs::write(dir.join("index.json"), serde_json::to_vec(&index).expect("json")).expect("index");
}

#[test]
fn malformed_caches_are_refused_whole() {
    let f = fixture();
    let b = empty_store(&f, "b");
    let check = |name: &str, manifest: serde_json::Value, config: &[u8], needle: &str| {
        let dir = f._dir.path().join(name);
        custom_layout(&dir, &manifest, config);
        let err = import(&b, &LocalLayout::new(&dir, None)).expect_err(name).to_string();
        assert!(err.contains(needle), "{name}: {err}");
    };
    let cfg = |records: serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "kiln.buildcache": {"version": 1, "records": records}})).expect("json")
    };
    let manifest_for = |config: &[u8], artifact: &str| {
        serde_json::json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact,
            "config": {"mediaType": OCI_CONFIG, "digest": Digest::of(config).to_string(), "size": config.len()}, "layers": []})
    };
    let good = cfg(serde_json::json!([]));
    check("plain-image", manifest_for(&good, "application/vnd.example"), &good, "not a kiln build cache");
    let bad_key = cfg(serde_json::json!([{"key": "../../etc/x", "layer": null}]));
    check("bad-key", manifest_for(&bad_key, ARTIFACT_TYPE), &bad_key, "not a kiln cache key");
    let bad_index = cfg(serde_json::json!([{"key": "a".repeat(64), "layer": 3}]));
    check("bad-index", manifest_for(&bad_index, ARTIFACT_TYPE), &bad_index, "names layer");
    let mut lying_size = manifest_for(&good, ARTIFACT_TYPE);
    lying_size["config"]["size"] = serde_json::json!(good.len() + 1);
    check("config-size", lying_size, &good, "bytes");
    let future = serde_json::to_vec(&serde_json::json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}, "kiln.buildcache": {"version": 9, "records": []}})).expect("json");
    check("version", manifest_for(&future, ARTIFACT_TYPE), &future, "format version 9");

    // A huge index.json is not read whole.
    let dir = f._dir.path().join("huge");
    fs::create_dir_all(&dir).expect("mkdir");
    let mut file = fs::File::create(dir.join("index.json")).expect("index");
    file.write_all(&vec![b' '; 2 << 20]).expect("write");
    let err = import(&b, &LocalLayout::new(&dir, None)).expect_err("huge").to_string();
    assert!(err.contains("larger than"), "{err}");
    // A missing directory is a source error (a warning for the CLI).
    let err = import(&b, &LocalLayout::new(f._dir.path().join("nope"), None)).expect_err("missing");
    assert!(matches!(err, TransferError::Source(_)), "{err}");
    // Nothing of all that reached the store.
    assert!(fs::read_dir(b.pins_dir().join("build-cache")).map(|d| d.count()).unwrap_or(0) == 0);
}

#[test]
fn tags_select_the_entry_and_other_entries_are_kept() {
    let f = fixture();
    let dir = f._dir.path().join("out");
    let max = collect(&f.store, &f.keys, ExportMode::Max, &f.image).expect("max");
    let min = collect(&f.store, &f.keys, ExportMode::Min, &f.image).expect("min");
    layout::write(&f.store, &max, &dir, "max").expect("write max");
    layout::write(&f.store, &min, &dir, "latest").expect("write min");
    layout::write(&f.store, &min, &dir, "latest").expect("rewrite min");
    assert_eq!(json(&dir.join("index.json"))["manifests"].as_array().map(Vec::len), Some(2));
    let b = empty_store(&f, "b");
    assert_eq!(import(&b, &LocalLayout::new(&dir, None)).expect("latest").added, 2);
    assert_eq!(import(&b, &LocalLayout::new(&dir, Some("max".into()))).expect("max").added, 1);
    let err = import(&b, &LocalLayout::new(&dir, Some("other".into()))).expect_err("no such tag").to_string();
    assert!(err.contains("\"other\""), "{err}");
}

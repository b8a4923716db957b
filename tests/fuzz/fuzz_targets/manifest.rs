//! Registry manifests and indexes as a registry sends them.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for media in [None, Some("application/vnd.oci.image.index.v1+json"), Some("application/vnd.docker.distribution.manifest.v2+json")] {
        let _ = kiln_registry::manifest::parse(data, media, "fuzz");
    }
});

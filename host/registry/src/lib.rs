//! kiln's registry client: the OCI distribution protocol over HTTP(S) — pull, push, login —
//! with Docker's conventions for credentials (`config.json`, credential helpers) and
//! authentication (anonymous, Basic, bearer tokens from `WWW-Authenticate`).
//!
//! It writes to the store only through staging areas and verified ingests: nothing a registry
//! sends becomes visible in the store before its digest and size are checked. It never
//! touches names or images other than the one it pulls.
//!
//! The HTTP client (ureq, with rustls) is kept inside this crate.

pub mod artifact;
pub mod challenge;
pub mod client;
pub mod credentials;
pub mod download;
mod error;
pub mod login;
pub mod manifest;
pub mod pull;
pub mod push;
pub mod settings;
pub mod tags;

pub use client::Client;
pub use credentials::{Credentials, DockerConfig};
pub use error::RegistryError;
pub use manifest::Platform;
pub use pull::{pull, PullEvent, PullOptions, Pulled};
pub use push::{push, PushEvent, PushOptions, Pushed};
pub use settings::Settings;

use kiln_store::{Reference, Store};

/// A client for `domain` with kiln's registry settings and the user's Docker credentials.
pub fn connect(domain: &str, settings: &Settings) -> Result<Client, RegistryError> {
    let creds = match credentials::default_config_path() {
        Some(p) => DockerConfig::load(&p)?.credentials(domain)?,
        None => None,
    };
    Client::new(domain, settings, creds)
}

/// Pulls `reference` as `kiln pull` does: from the registry's configured mirrors first (in
/// order), then from the registry itself. This is the entry point for `FROM <remote image>`:
/// afterwards `store.image(&pulled.image)` reads the image.
pub fn pull_image(store: &Store, reference: &Reference, opts: &PullOptions, events: &(dyn Fn(PullEvent) + Sync)) -> Result<Pulled, RegistryError> {
    let settings = Settings::load_default()?;
    for mirror in settings.get(&reference.domain).mirrors {
        if let Ok(client) = connect(&mirror, &settings) {
            if let Ok(p) = pull(store, &client, reference, opts, events) {
                return Ok(p);
            }
        }
    }
    let client = connect(&reference.domain, &settings)?;
    pull(store, &client, reference, opts, events)
}

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
pub use credentials::{AuthFiles, Credentials, DockerConfig};
pub use error::RegistryError;
pub use manifest::Platform;
pub use pull::{pull, PullEvent, PullOptions, Pulled};
pub use push::{push, PushEvent, PushOptions, Pushed};
pub use settings::Settings;

use kiln_store::{Reference, Store};

/// A client for `domain` with kiln's registry settings and the user's credentials (kiln's auth
/// file, then Docker's: [`AuthFiles::locate`] without `--authfile`).
pub fn connect(domain: &str, settings: &Settings) -> Result<Client, RegistryError> {
    connect_with(domain, settings, &AuthFiles::locate(None))
}

/// A client for `domain` with credentials from `auth`.
pub fn connect_with(domain: &str, settings: &Settings, auth: &AuthFiles) -> Result<Client, RegistryError> {
    Client::new(domain, settings, auth.credentials(domain)?)
}

/// Pulls `reference` as `kiln pull` does: from the registry's configured mirrors first (in
/// order), then from the registry itself. This is the entry point for `FROM <remote image>`:
/// afterwards `store.image(&pulled.image)` reads the image.
pub fn pull_image(store: &Store, reference: &Reference, opts: &PullOptions, events: &(dyn Fn(PullEvent) + Sync)) -> Result<Pulled, RegistryError> {
    let settings = Settings::load_default()?;
    let auth = AuthFiles::locate(opts.authfile.as_deref());
    for mirror in settings.get(&reference.domain).mirrors {
        if let Ok(client) = connect_with(&mirror, &settings, &auth) {
            if let Ok(p) = pull(store, &client, reference, opts, events) {
                return Ok(p);
            }
        }
    }
    let client = connect_with(&reference.domain, &settings, &auth)?;
    pull(store, &client, reference, opts, events)
}

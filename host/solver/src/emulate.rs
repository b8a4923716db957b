//! Cross-platform RUN steps: a stage for another architecture (`FROM --platform=linux/arm64`,
//! `kiln build --platform`) runs its binaries under QEMU's user-mode emulator inside the guest
//! ([`kiln_runtime::emulate`]), uploaded and registered the first time a RUN of that
//! architecture needs it, once per build.

use kiln_frontend::graph::Platform;
use kiln_runtime::emulate::{find, host_arch, install};

use crate::guest::GuestSession;
use crate::stage::{lock, Build};
use crate::{BuildError, Reporter};

impl Build<'_> {
    /// Makes the guest able to run `platform`'s binaries (a no-op for the host's own).
    pub(crate) fn ensure_emulator(&self, session: &GuestSession, platform: &Platform, out: &Reporter) -> Result<(), BuildError> {
        let mut done = lock(&self.emulators);
        // A guest of the platform's own architecture runs it natively.
        if platform.arch == session.arch.oci() || platform.arch == host_arch() || done.contains(&platform.arch) {
            return Ok(());
        }
        let Some(emu) = find(platform)? else { return Ok(()) };
        out.info(&format!("emulating {platform} with {}", emu.binary.display()));
        install(session.agent(), &emu)?;
        done.insert(platform.arch.clone());
        Ok(())
    }
}

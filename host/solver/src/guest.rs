//! One guest for the whole build: layers are uploaded once, each RUN is an overlay over them
//! whose upper dir then serves as the next lower dir.
//!
//! Guest layout: `/run/kiln/layers/<i>` holds layer i (uploaded, or the upper dir of the RUN
//! that made it), `/run/kiln/work/<n>` and `/run/kiln/root/<n>` are per-RUN overlay work dir
//! and mount point.

use std::io::Read;

use kiln_sandbox::agent::Process;
use kiln_sandbox::{Backend, GuestImage, SandboxError, Vm, VmConfig};
use kiln_store::image::RunConfig;
use kiln_store::{LayerInfo, Staging};

use crate::{is_empty_layer, BuildError, Reporter};

pub struct GuestSession {
    vm: Box<dyn Vm>,
    /// Layers 0..uploaded are present in the guest.
    uploaded: usize,
    runs: usize,
}

fn layer_dir(i: usize) -> String {
    format!("/run/kiln/layers/{i}")
}

impl GuestSession {
    pub fn start(backend: &dyn Backend, config: &VmConfig, out: &mut Reporter) -> Result<Self, BuildError> {
        let image = GuestImage::locate()?;
        out.info("starting the build VM");
        let vm = backend.start(&image, config)?;
        out.info(&format!("VM ready: {}", vm.describe()));
        Ok(Self { vm, uploaded: 0, runs: 0 })
    }

    fn upload(&mut self, staging: &Staging, layers: &[LayerInfo]) -> Result<(), BuildError> {
        while self.uploaded < layers.len() {
            let layer = &layers[self.uploaded];
            let blob = staging.open_blob(&layer.digest)?;
            let mut tar = flate2::read::GzDecoder::new(std::io::BufReader::new(blob));
            self.vm.agent().receive_tar(&layer_dir(self.uploaded), &mut tar as &mut dyn Read)?;
            self.uploaded += 1;
        }
        Ok(())
    }

    /// Runs `argv` over `layers` and returns the new layer (possibly empty).
    pub fn run_step(
        &mut self,
        staging: &Staging,
        layers: &[LayerInfo],
        config: &RunConfig,
        argv: &[String],
        clamp_mtime: Option<i64>,
        out: &mut Reporter,
    ) -> Result<LayerInfo, BuildError> {
        self.upload(staging, layers)?;
        let n = layers.len();
        self.runs += 1;
        let (upper, work, root) = (layer_dir(n), format!("/run/kiln/work/{}", self.runs), format!("/run/kiln/root/{}", self.runs));
        let agent = self.vm.agent();
        let lowers = (0..n).rev().map(layer_dir).collect();
        agent.mount_overlay(lowers, &upper, &work, &root)?;
        let process = Process {
            rootfs: root.clone(),
            argv: argv.to_vec(),
            env: config.env.clone().unwrap_or_default(),
            cwd: config.working_dir.clone().unwrap_or_else(|| "/".into()),
            uid: 0,
            gid: 0,
        };
        let (stdout, stderr, tail) = out.process_output();
        let status = agent.run(&process, stdout, stderr);
        let unmounted = agent.unmount(&root);
        let status = status?;
        unmounted?;
        if !status.success() {
            return Err(BuildError::StepFailed { line: 0, text: String::new(), argv: argv.to_vec(), status, tail: tail.render() });
        }
        let layer = agent.diff(&upper, clamp_mtime, |stream| {
            staging.store().ingest_layer(stream).map_err(|e| SandboxError::Agent(format!("layer from the guest rejected: {e}")))
        })?;
        if !is_empty_layer(&layer) {
            // The upper dir already is this layer in the guest: no need to upload it again.
            self.uploaded = n + 1;
        }
        Ok(layer)
    }

    /// Powers the guest off; returns its description for the summary.
    pub fn finish(self, out: &mut Reporter) -> String {
        let desc = self.vm.describe();
        if let Err(e) = self.vm.shutdown() {
            out.info(&format!("warning: guest did not power off cleanly: {e}"));
        }
        desc
    }
}

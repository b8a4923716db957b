//! Windows (experimental: built and unit-tested under Wine in CI, not yet run with QEMU on
//! Windows): a Job Object with kill-on-close holding every VM process (when kiln ends, however
//! it ends, Windows closes its handle and kills them), and a new process group so Ctrl-C
//! reaches kiln only.

use std::os::windows::io::AsHandle;
use std::os::windows::io::AsRawHandle;
use std::os::windows::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JobObjectExtendedLimitInformation, SetInformationJobObject,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, TerminateProcess, CREATE_NEW_PROCESS_GROUP, DETACHED_PROCESS,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_TERMINATE,
};

/// Keeps `cmd`'s process out of the console's Ctrl-C group; [`adopt`] ties its life to kiln's.
pub fn harden(cmd: &mut Command) {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP);
}

/// The process-wide kill-on-close job, as an integer (a HANDLE is a raw pointer, not `Sync`).
/// Never closed: it closes when kiln's process ends.
fn job() -> std::io::Result<usize> {
    static JOB: OnceLock<Result<usize, i32>> = OnceLock::new();
    let job = JOB.get_or_init(|| {
        // SAFETY: CreateJobObjectW with no security attributes and no name returns a new handle
        // or null; SetInformationJobObject reads exactly the struct we pass with its size.
        unsafe {
            let job = CreateJobObjectW(std::ptr::null(), std::ptr::null());
            if job.is_null() {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
            let mut info: JOBOBJECT_EXTENDED_LIMIT_INFORMATION = std::mem::zeroed();
            info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
            let size = std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>() as u32;
            if SetInformationJobObject(job, JobObjectExtendedLimitInformation, (&raw const info).cast(), size) == 0 {
                let code = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
                CloseHandle(job);
                return Err(code);
            }
            Ok(job as usize)
        }
    });
    job.as_ref().map(|j| *j).map_err(|code| std::io::Error::from_raw_os_error(*code))
}

/// Puts a just-spawned VM process into the kill-on-close job.
pub fn adopt(child: &Child) -> std::io::Result<()> {
    let job = job()? as HANDLE;
    // SAFETY: both handles are live: the job is never closed, and `child` owns its process
    // handle for the duration of the call.
    if unsafe { AssignProcessToJobObject(job, child.as_raw_handle()) } == 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// The Windows kernel's identity, for caches of what this host can do: ntoskrnl.exe's size and
/// modification time (a Windows update that could change what WHPX does replaces that file).
pub fn os_release() -> String {
    let root = std::env::var_os("SystemRoot").unwrap_or_else(|| "C:\\Windows".into());
    let kernel = std::path::Path::new(&root).join("System32").join("ntoskrnl.exe");
    match std::fs::metadata(&kernel) {
        Ok(m) => {
            let when = m.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
            format!("windows-{}-{when}", m.len())
        }
        Err(_) => "windows".into(),
    }
}

/// The creation time of process `pid` (100 ns units since 1601, `GetProcessTimes`), if it
/// still runs.
pub fn start_time(pid: u32) -> Option<u64> {
    /// `GetExitCodeProcess`'s code for a process that has not exited.
    const STILL_ACTIVE: u32 = 259;
    // SAFETY: OpenProcess returns a new handle or null; it is closed below. The FILETIMEs and
    // the exit code are plain integers we own.
    unsafe {
        let handle = OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid);
        if handle.is_null() {
            return None;
        }
        let zero = FILETIME { dwLowDateTime: 0, dwHighDateTime: 0 };
        let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
        let mut code = 0u32;
        let ok = GetProcessTimes(handle, &mut created, &mut exited, &mut kernel, &mut user) != 0
            && GetExitCodeProcess(handle, &mut code) != 0
            && code == STILL_ACTIVE;
        CloseHandle(handle);
        ok.then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
    }
}

/// Terminates `pid`, a VM process kiln spawned and has not reaped.
pub fn kill(pid: u32) {
    // SAFETY: OpenProcess returns a new handle (or null) that is closed here; the pid is one
    // kiln spawned and has not waited for, so it names that process.
    unsafe {
        let handle = OpenProcess(PROCESS_TERMINATE, 0, pid);
        if !handle.is_null() {
            TerminateProcess(handle, 1);
            CloseHandle(handle);
        }
    }
}

/// A copy of kiln's stderr, for a child's output.
pub fn console() -> std::io::Result<Stdio> {
    Ok(Stdio::from(std::io::stderr().as_handle().try_clone_to_owned()?))
}

/// Runs `cmd` detached from kiln's console: it outlives it (the container supervisor).
pub fn detach(cmd: &mut Command) {
    cmd.creation_flags(CREATE_NEW_PROCESS_GROUP | DETACHED_PROCESS);
}

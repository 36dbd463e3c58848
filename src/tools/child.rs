//! Child processes of a tool (a server under test, ffmpeg, Chromium) never outlive it.

use std::os::unix::process::CommandExt;
use std::process::Command;

/// Has the kernel kill the child when this process dies, however it dies: `Drop` cannot run
/// when the tool is killed outright (SIGKILL, a signal with no handler), and a child left
/// behind would hold its ports, its files and the machine's CPU.
pub fn dies_with_parent(command: &mut Command) -> &mut Command {
    // SAFETY: prctl is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        })
    }
}

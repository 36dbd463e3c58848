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

/// Runs the child on CPU `cpu` only (`sched_setaffinity` before `exec`; it carries over `exec`
/// and to the child's threads), so a benchmark can give a server one core and its load
/// generator another.
pub fn pinned_to_cpu(command: &mut Command, cpu: usize) -> &mut Command {
    // SAFETY: sched_setaffinity is async-signal-safe; the set is a local on the child's stack.
    unsafe {
        command.pre_exec(move || {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Runs the child at nice value `nice` (negative: ahead of ordinary processes; root only), so a
/// benchmark's server and load generator are not starved by unrelated work on their cores. A
/// refusal (not root) is no error: the child runs at the ordinary priority.
pub fn with_nice(command: &mut Command, nice: libc::c_int) -> &mut Command {
    // SAFETY: setpriority is async-signal-safe and touches no memory of ours.
    unsafe {
        command.pre_exec(move || {
            libc::setpriority(libc::PRIO_PROCESS, 0, nice);
            Ok(())
        })
    }
}

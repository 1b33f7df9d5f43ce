//! Windows-only pieces of the agent: the Job Object that holds an action's process tree, so
//! that a timeout kills the process and every child it started, and the resumption of a process
//! created suspended once it is in its job (so not even its first instruction runs outside).

use std::os::windows::io::RawHandle;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation, SetInformationJobObject,
    TerminateJobObject,
};

/// `CREATE_NO_WINDOW`: executors run without a console window.
pub const CREATE_NO_WINDOW: u32 = windows_sys::Win32::System::Threading::CREATE_NO_WINDOW;
/// `CREATE_SUSPENDED`: the process's main thread waits until [`resume`].
pub const CREATE_SUSPENDED: u32 = windows_sys::Win32::System::Threading::CREATE_SUSPENDED;

/// Resumes the main thread of a child created with [`CREATE_SUSPENDED`]. A process created
/// suspended has exactly one thread, found by a snapshot of the system's threads.
pub fn resume(child: &tokio::process::Child) -> std::io::Result<()> {
    use windows_sys::Win32::Foundation::INVALID_HANDLE_VALUE;
    use windows_sys::Win32::System::Diagnostics::ToolHelp::{
        CreateToolhelp32Snapshot, TH32CS_SNAPTHREAD, THREADENTRY32, Thread32First, Thread32Next,
    };
    use windows_sys::Win32::System::Threading::{OpenThread, ResumeThread, THREAD_SUSPEND_RESUME};
    let pid = child
        .id()
        .ok_or_else(|| std::io::Error::other("the process has already ended"))?;
    // SAFETY: a snapshot of all threads; the handle is closed below.
    let snapshot = unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPTHREAD, 0) };
    if snapshot == INVALID_HANDLE_VALUE {
        return Err(std::io::Error::last_os_error());
    }
    let mut entry = THREADENTRY32 {
        dwSize: u32::try_from(std::mem::size_of::<THREADENTRY32>()).expect("the struct is small"),
        ..Default::default()
    };
    let mut resumed = 0;
    let mut failure = None;
    // SAFETY: `entry` is a valid THREADENTRY32 with its size set, living across the calls.
    let mut more = unsafe { Thread32First(snapshot, &mut entry) } != 0;
    while more {
        if entry.th32OwnerProcessID == pid {
            // SAFETY: opening a thread of our own child for suspend/resume rights.
            let thread = unsafe { OpenThread(THREAD_SUSPEND_RESUME, 0, entry.th32ThreadID) };
            if thread.is_null() {
                failure = Some(std::io::Error::last_os_error());
            } else {
                // SAFETY: `thread` is a valid handle opened above and closed right after.
                unsafe {
                    if ResumeThread(thread) == u32::MAX {
                        failure = Some(std::io::Error::last_os_error());
                    } else {
                        resumed += 1;
                    }
                    CloseHandle(thread);
                }
            }
        }
        // SAFETY: as for Thread32First.
        more = unsafe { Thread32Next(snapshot, &mut entry) } != 0;
    }
    // SAFETY: the snapshot handle is owned here and closed once.
    unsafe {
        CloseHandle(snapshot);
    }
    match (resumed, failure) {
        (0, Some(e)) => Err(e),
        (0, None) => Err(std::io::Error::other("the suspended process has no thread to resume")),
        _ => Ok(()),
    }
}

/// An anonymous Job Object with kill-on-close: terminating it, or dropping the last handle,
/// ends every process in it.
pub struct Job(HANDLE);

// SAFETY: a job handle is a kernel object reference usable from any thread; this type only
// passes it to thread-safe kernel calls.
unsafe impl Send for Job {}
// SAFETY: as above; no call mutates Rust-side state.
unsafe impl Sync for Job {}

impl Job {
    /// A new job, or `None` if Windows refuses one (then only the direct child is killed).
    pub fn new() -> Option<Job> {
        // SAFETY: null attributes and name are allowed and make an anonymous job.
        let handle = unsafe { CreateJobObjectW(std::ptr::null(), std::ptr::null()) };
        if handle.is_null() {
            return None;
        }
        let job = Job(handle);
        let mut limits = JOBOBJECT_EXTENDED_LIMIT_INFORMATION::default();
        limits.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE;
        // SAFETY: the pointer and size describe `limits`, which lives across the call.
        let ok = unsafe {
            SetInformationJobObject(
                job.0,
                JobObjectExtendedLimitInformation,
                (&limits as *const JOBOBJECT_EXTENDED_LIMIT_INFORMATION).cast(),
                u32::try_from(std::mem::size_of::<JOBOBJECT_EXTENDED_LIMIT_INFORMATION>())
                    .expect("the struct is small"),
            )
        };
        (ok != 0).then_some(job)
    }

    /// Puts a process (and so every child it starts later) in the job.
    pub fn assign(&self, process: RawHandle) -> std::io::Result<()> {
        // SAFETY: both handles are valid: the job is owned by self, the process by the caller's
        // live child.
        let ok = unsafe { AssignProcessToJobObject(self.0, process as HANDLE) };
        if ok == 0 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Ends every process in the job.
    pub fn terminate(&self) {
        // SAFETY: the handle is owned by self and valid until drop.
        unsafe {
            TerminateJobObject(self.0, 1);
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        // SAFETY: the handle is owned by self and closed exactly once; kill-on-close ends any
        // process still in the job.
        unsafe {
            CloseHandle(self.0);
        }
    }
}

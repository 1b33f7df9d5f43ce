//! Windows-only pieces of the agent: the Job Object that holds an action's process tree, so
//! that a timeout kills the process and every child it started.

use std::os::windows::io::RawHandle;
use windows_sys::Win32::Foundation::{CloseHandle, HANDLE};
use windows_sys::Win32::System::JobObjects::{
    AssignProcessToJobObject, CreateJobObjectW, JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE,
    JOBOBJECT_EXTENDED_LIMIT_INFORMATION, JobObjectExtendedLimitInformation, SetInformationJobObject,
    TerminateJobObject,
};

/// `CREATE_NO_WINDOW`: executors run without a console window.
pub const CREATE_NO_WINDOW: u32 = windows_sys::Win32::System::Threading::CREATE_NO_WINDOW;

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

//! `kextwatch sysext activate|deactivate|status` (macOS only): asks the SystemExtensions framework to
//! activate or deactivate the Endpoint Security extension embedded in the host app
//! (`Kextwatch.app/Contents/Library/SystemExtensions/`). Run from the app's own binary, as the
//! framework requires; MDM approval (`kextwatch profile`) makes it silent.

use std::sync::mpsc;
use std::time::Duration;

use dispatch2::DispatchQueue;
use objc2::rc::Retained;
use objc2::runtime::{NSObject, NSObjectProtocol, ProtocolObject};
use objc2::{define_class, msg_send, AllocAnyThread, DefinedClass};
use objc2_foundation::{NSError, NSString};
use objc2_system_extensions::{
    OSSystemExtensionManager, OSSystemExtensionProperties, OSSystemExtensionReplacementAction,
    OSSystemExtensionRequest, OSSystemExtensionRequestDelegate, OSSystemExtensionRequestResult,
    OSSystemExtensionsWorkspace,
};

/// Why a request or a status query got no answer.
#[derive(Debug, thiserror::Error)]
pub enum SysextError {
    #[error("no answer from the SystemExtensions framework within {0:?}")]
    NoAnswer(Duration),
    #[error("status needs macOS 15 or later; use `systemextensionsctl list`")]
    StatusNeedsMacos15,
    /// The framework's own description of its error.
    #[error("{0}")]
    Framework(String),
}

/// What the framework reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    NeedsUserApproval,
    Completed,
    WillCompleteAfterReboot,
    Failed(String),
}

pub struct DelegateIvars {
    tx: mpsc::Sender<Progress>,
}

define_class!(
    // SAFETY: NSObject has no subclassing requirements; the class does not implement Drop.
    #[unsafe(super(NSObject))]
    #[ivars = DelegateIvars]
    struct RequestDelegate;

    unsafe impl NSObjectProtocol for RequestDelegate {}

    unsafe impl OSSystemExtensionRequestDelegate for RequestDelegate {
        #[unsafe(method(request:actionForReplacingExtension:withExtension:))]
        fn replace(
            &self,
            _request: &OSSystemExtensionRequest,
            _existing: &OSSystemExtensionProperties,
            _new: &OSSystemExtensionProperties,
        ) -> OSSystemExtensionReplacementAction {
            // An upgrade (or reinstall) replaces the running extension.
            OSSystemExtensionReplacementAction::Replace
        }

        #[unsafe(method(requestNeedsUserApproval:))]
        fn needs_approval(&self, _request: &OSSystemExtensionRequest) {
            let _ = self.ivars().tx.send(Progress::NeedsUserApproval);
        }

        #[unsafe(method(request:didFinishWithResult:))]
        fn finished(
            &self,
            _request: &OSSystemExtensionRequest,
            result: OSSystemExtensionRequestResult,
        ) {
            let p = if result == OSSystemExtensionRequestResult::WillCompleteAfterReboot {
                Progress::WillCompleteAfterReboot
            } else {
                Progress::Completed
            };
            let _ = self.ivars().tx.send(p);
        }

        #[unsafe(method(request:didFailWithError:))]
        fn failed(&self, _request: &OSSystemExtensionRequest, error: &NSError) {
            let _ = self
                .ivars()
                .tx
                .send(Progress::Failed(error.localizedDescription().to_string()));
        }
    }
);

impl RequestDelegate {
    fn new(tx: mpsc::Sender<Progress>) -> Retained<Self> {
        let this = Self::alloc().set_ivars(DelegateIvars { tx });
        // SAFETY: NSObject's init on a freshly allocated object with its ivars set.
        unsafe { msg_send![super(this), init] }
    }
}

/// Submit an activation (`activate = true`) or deactivation request for `bundle_id`, reporting
/// progress to `report`, and wait for the outcome (user approval can take a while).
pub fn request(
    bundle_id: &str,
    activate: bool,
    wait: Duration,
    mut report: impl FnMut(&Progress),
) -> Result<Progress, SysextError> {
    let (tx, rx) = mpsc::channel();
    let delegate = RequestDelegate::new(tx);
    let queue = DispatchQueue::new("com.kextwatch.sysext", None);
    let id = NSString::from_str(bundle_id);
    // SAFETY: valid identifier and queue; the delegate outlives the request (it is held until the
    // outcome arrives below).
    let request = unsafe {
        if activate {
            OSSystemExtensionRequest::activationRequestForExtension_queue(&id, &queue)
        } else {
            OSSystemExtensionRequest::deactivationRequestForExtension_queue(&id, &queue)
        }
    };
    // SAFETY: as above.
    unsafe {
        request.setDelegate(Some(ProtocolObject::from_ref(&*delegate)));
        OSSystemExtensionManager::sharedManager().submitRequest(&request);
    }
    let deadline = std::time::Instant::now() + wait;
    let mut pending = false;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(Progress::NeedsUserApproval) => {
                pending = true;
                report(&Progress::NeedsUserApproval);
            }
            Ok(outcome) => {
                report(&outcome);
                return Ok(outcome);
            }
            // Still waiting for a person or a profile: the request stays pending in macOS.
            Err(_) if pending => return Ok(Progress::NeedsUserApproval),
            Err(_) => return Err(SysextError::NoAnswer(wait)),
        }
    }
}

/// Extensions of the host app `app_bundle_id` and whether each is enabled (macOS 15+ API).
pub fn status(app_bundle_id: &str) -> Result<Vec<(String, String, bool)>, SysextError> {
    let version = objc2_foundation::NSProcessInfo::processInfo().operatingSystemVersion();
    if version.majorVersion < 15 {
        return Err(SysextError::StatusNeedsMacos15);
    }
    // SAFETY: plain framework calls with valid arguments.
    let set = unsafe {
        OSSystemExtensionsWorkspace::sharedWorkspace()
            .systemExtensionsForApplicationWithBundleID_error(&NSString::from_str(app_bundle_id))
    }
    .map_err(|e| SysextError::Framework(e.localizedDescription().to_string()))?;
    let mut out = Vec::new();
    for p in set.iter() {
        // SAFETY: properties objects returned by the framework.
        unsafe {
            out.push((
                p.bundleIdentifier().to_string(),
                p.bundleShortVersion().to_string(),
                p.isEnabled(),
            ));
        }
    }
    Ok(out)
}

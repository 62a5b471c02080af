//! Cryptographic validity of a bundle's signature. Only Security.framework can tell (certificate
//! chain, resource seals); elsewhere it is reported as unknown, never guessed.

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "detail")]
pub enum Validity {
    Valid,
    /// Security.framework rejected it; the OSStatus.
    Invalid(i32),
    Unknown,
}

#[cfg(target_os = "macos")]
pub fn check_validity(bundle: &Path) -> Validity {
    use core_foundation::base::TCFType;
    use core_foundation::url::CFURL;
    use security_framework_sys::code_signing::{
        kSecCSCheckAllArchitectures, SecStaticCodeCheckValidity, SecStaticCodeCreateWithPath,
        SecStaticCodeRef,
    };

    let Some(url) = CFURL::from_path(bundle, true) else {
        return Validity::Unknown;
    };
    let mut code: SecStaticCodeRef = std::ptr::null_mut();
    // SAFETY: `url` is a valid CFURL for the call; `code` receives a +1 reference or stays null.
    // Flags 0 are kSecCSDefaultFlags.
    let status = unsafe { SecStaticCodeCreateWithPath(url.as_concrete_TypeRef(), 0, &mut code) };
    if status != 0 || code.is_null() {
        return Validity::Invalid(status);
    }
    // SAFETY: `code` is a valid static code object; no requirement is passed.
    let status = unsafe {
        SecStaticCodeCheckValidity(code, kSecCSCheckAllArchitectures, std::ptr::null_mut())
    };
    // SAFETY: releases the reference SecStaticCodeCreateWithPath returned.
    unsafe { core_foundation::base::CFRelease(code as core_foundation::base::CFTypeRef) };
    if status == 0 {
        Validity::Valid
    } else {
        Validity::Invalid(status)
    }
}

#[cfg(not(target_os = "macos"))]
pub fn check_validity(_bundle: &Path) -> Validity {
    Validity::Unknown
}

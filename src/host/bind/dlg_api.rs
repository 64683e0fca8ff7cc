//! The dialog module's API (`load_dlg`, ABI spec §4.11): the few calls this module makes, and
//! reads of the dialog cell fields it needs.
//!
//! The API is bound once in `mod_init` (main process, before fork) and inherited by every
//! process. A [`Dlg`] is a borrowed dialog cell: valid for the script function or callback
//! that produced it, never stored.

use std::ffi::{c_int, c_uint, c_void};
use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::OnceLock;

use super::avp::IntStr;
use super::msg::Msg;
use crate::host::ffi::api::api;
use crate::host::ffi::cstr::{self, borrowed_str};
use crate::host::ffi::sys::{host_str, sip_msg};

/// `struct dlg_cell` (opaque; fields read at the host profile's offsets).
#[repr(C)]
pub(crate) struct DlgCell {
    _opaque: [u8; 0],
}

/// `struct dlg_cb_params` (40 bytes).
#[repr(C)]
pub(crate) struct DlgCbParams {
    pub(crate) msg: *mut sip_msg,
    pub(crate) direction: c_uint,
    pub(crate) dst_leg: c_int,
    pub(crate) is_active: c_uint,
    pub(crate) dlg_data: *mut c_void,
    pub(crate) param: *mut *mut c_void,
}

impl DlgCbParams {
    /// The value name a `DLGCB_PROCESS_VARS` callback was run for (`None`: all values).
    ///
    /// # Safety
    /// `self` must be the parameters of a `DLGCB_PROCESS_VARS` callback being run.
    pub(crate) unsafe fn replicated_value_name(&self) -> Option<Vec<u8>> {
        let name = self.dlg_data.cast::<host_str>();
        // SAFETY: for this callback type `dlg_data` is NULL or the `str*` name of the value,
        // live for the callback.
        (!name.is_null()).then(|| unsafe { cstr::str_bytes(name) }.to_vec())
    }
}

/// A dialog callback.
pub(crate) type DialogCb = unsafe extern "C" fn(*mut DlgCell, c_int, *mut DlgCbParams);

type RegisterDlgcb = unsafe extern "C" fn(
    *mut DlgCell,
    c_int,
    Option<DialogCb>,
    *mut c_void,
    Option<unsafe extern "C" fn(*mut c_void)>,
) -> c_int;
type CreateDlg = unsafe extern "C" fn(*mut sip_msg, c_int) -> c_int;
type GetDlg = unsafe extern "C" fn() -> *mut DlgCell;
type StoreDlgValue = unsafe extern "C" fn(*mut DlgCell, *mut host_str, *mut IntStr, c_int) -> c_int;
type FetchDlgValue =
    unsafe extern "C" fn(*mut DlgCell, *const host_str, *mut c_int, *mut IntStr, c_int) -> c_int;
type TerminateDlg = unsafe extern "C" fn(*const host_str, c_uint, c_uint, *const host_str) -> c_int;
type GetDlgDid = unsafe extern "C" fn(*mut DlgCell) -> *mut host_str;

/// `struct dlg_binds` (272 bytes, 34 function pointers); only the used slots are typed.
#[repr(C)]
pub(crate) struct DlgBinds {
    register_dlgcb: Option<RegisterDlgcb>,
    create_dlg: Option<CreateDlg>,
    get_dlg: Option<GetDlg>,
    _profiles: [*mut c_void; 5],
    store_dlg_value: Option<StoreDlgValue>,
    fetch_dlg_value: Option<FetchDlgValue>,
    terminate_dlg: Option<TerminateDlg>,
    _match_to_direction: [*mut c_void; 8],
    get_dlg_did: Option<GetDlgDid>,
    _lookups_and_ctx: [*mut c_void; 14],
}

/// Callback types (`DLGCB_*`).
/// A dialog entered this instance's memory from the database or by replication (global:
/// registered without a dialog, alone; also run at registration for every dialog present).
pub(crate) const DLGCB_LOADED: c_int = 1 << 0;
pub(crate) const DLGCB_FAILED: c_int = 1 << 2;
pub(crate) const DLGCB_REQ_WITHIN: c_int = 1 << 4;
pub(crate) const DLGCB_TERMINATED: c_int = 1 << 5;
pub(crate) const DLGCB_EXPIRED: c_int = 1 << 6;
pub(crate) const DLGCB_RESPONSE_WITHIN: c_int = 1 << 9;
/// Dialog values arrived by replication (`dlg_data`: the `str*` name of one value, or NULL
/// for a whole set of values).
pub(crate) const DLGCB_PROCESS_VARS: c_int = 1 << 14;

/// Value types of `store_dlg_value` / `fetch_dlg_value`.
pub(crate) const DLG_VAL_TYPE_NONE: c_int = 0;
pub(crate) const DLG_VAL_TYPE_STR: c_int = 1;
pub(crate) const DLG_VAL_TYPE_INT: c_int = 2;

/// Offsets in `struct dlg_cell` and `struct dlg_leg` (host profile; the same in every verified
/// release, ABI spec §4.11).
mod off {
    use crate::host::ffi::sys::probed as p;
    #[cfg(test)]
    pub(super) const H_ID: usize = p::DLG_CELL_H_ID;
    #[cfg(test)]
    pub(super) const H_ENTRY: usize = p::DLG_CELL_H_ENTRY;
    pub(super) const CALLID: usize = p::DLG_CELL_CALLID;
    pub(super) const LEGS: usize = p::DLG_CELL_LEGS;
    pub(super) const LEGS_NO: usize = p::DLG_CELL_LEGS_NO;
    pub(super) const LEG_SIZE: usize = p::SIZEOF_DLG_LEG;
    pub(super) const LEG_TAG: usize = p::DLG_LEG_TAG;
}
/// `legs_no[]` indexes.
const DLG_LEGS_USED: usize = 0;
const DLG_LEG_200OK: usize = 2;

// SAFETY: only function pointers into the dialog module, fixed for the process life.
unsafe impl Send for DlgBinds {}
// SAFETY: as above; calling them is subject to each function's own rules.
unsafe impl Sync for DlgBinds {}

static BINDS: OnceLock<Option<DlgBinds>> = OnceLock::new();

/// Binds the dialog API if the dialog module is loaded; call once in `mod_init`.
pub(crate) fn load() -> bool {
    BINDS
        .get_or_init(|| {
            // SAFETY: `find_export` reads the loaded modules' tables; `load_dlg` has the
            // signature `int load_dlg(struct dlg_binds*)` and fills the whole struct.
            unsafe {
                let f = (api().find_export)(c"load_dlg".as_ptr(), 0);
                if f.is_null() {
                    return None;
                }
                let load: unsafe extern "C" fn(*mut DlgBinds) -> c_int = std::mem::transmute(f);
                let mut b: DlgBinds = std::mem::zeroed();
                if load(&mut b) == -1 || b.get_dlg.is_none() {
                    return None;
                }
                Some(b)
            }
        })
        .is_some()
}

/// The dialog API, if the dialog module is loaded.
pub(crate) fn binds() -> Option<&'static DlgBinds> {
    BINDS.get().and_then(Option::as_ref)
}

/// A dialog cell the dialog module handed us for the current call or callback, borrowed for
/// it (`'a`): not `Copy`, and the host strings read from it (`&'a [u8]`) end with it.
pub(crate) struct Dlg<'a> {
    ptr: NonNull<DlgCell>,
    _cell: PhantomData<&'a mut DlgCell>,
}

/// A dialog value as `fetch_dlg_value` returns it (copied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DlgValue {
    Str(Vec<u8>),
    Int(i32),
    /// Present without a value (stored with `DLG_VAL_TYPE_NONE`).
    Flag,
}

impl<'a> Dlg<'a> {
    /// Wraps a dialog pointer from a callback or `get_dlg`.
    ///
    /// # Safety
    /// `ptr` must be NULL or a live dialog cell for the duration of the current call.
    pub(crate) unsafe fn from_ptr(ptr: *mut DlgCell) -> Option<Self> {
        NonNull::new(ptr).map(|ptr| Self {
            ptr,
            _cell: PhantomData,
        })
    }

    /// The cell, for host calls that take it.
    pub(crate) fn as_ptr(&self) -> *mut DlgCell {
        self.ptr.as_ptr()
    }

    /// # Safety
    /// `offset` must be the offset of a field of type `T` in the host's `dlg_cell`.
    unsafe fn field<T: Copy>(&self, offset: usize) -> T {
        // SAFETY: per the contract; the cell is live for the call.
        unsafe {
            self.as_ptr()
                .cast::<u8>()
                .add(offset)
                .cast::<T>()
                .read_unaligned()
        }
    }

    /// The Call-ID.
    pub(crate) fn call_id(&self) -> &'a [u8] {
        // SAFETY: `callid` is a `str` at 160 pointing into the cell's shm, live for the call.
        unsafe {
            cstr::str_bytes(
                self.as_ptr()
                    .cast::<u8>()
                    .add(off::CALLID)
                    .cast::<host_str>(),
            )
        }
    }

    /// The tag of leg `idx`, if that leg is in use.
    fn leg_tag(&self, idx: usize) -> Option<&'a [u8]> {
        // SAFETY: `legs` is a `struct dlg_leg*` at 208 and `legs_no` an u8[4] at 216; legs
        // below `legs_no[DLG_LEGS_USED]` are initialised, each 1272 bytes with `tag` at 8.
        unsafe {
            let legs = self.field::<*mut u8>(off::LEGS);
            let used = self.field::<[u8; 4]>(off::LEGS_NO)[DLG_LEGS_USED] as usize;
            if legs.is_null() || idx >= used {
                return None;
            }
            let tag = cstr::str_bytes(legs.add(idx * off::LEG_SIZE + off::LEG_TAG).cast());
            Some(tag).filter(|t| !t.is_empty())
        }
    }

    /// The caller's tag (From-tag of the initial request).
    pub(crate) fn caller_tag(&self) -> Option<&'a [u8]> {
        self.leg_tag(0)
    }

    /// The callee's tag: the leg that sent the 2xx, else the first callee leg (`callee_idx`).
    pub(crate) fn callee_tag(&self) -> Option<&'a [u8]> {
        // SAFETY: `legs_no` is an u8[4] at 216.
        let ok = unsafe { self.field::<[u8; 4]>(off::LEGS_NO) }[DLG_LEG_200OK] as usize;
        self.leg_tag(if ok == 0 { 1 } else { ok })
    }
}

impl DlgBinds {
    /// `create_dlg(msg, 0)`: creates the dialog of an initial request (0 if it exists).
    ///
    /// # Safety
    /// `msg` must be the request being processed by the current script function.
    pub(crate) unsafe fn create(&self, msg: &Msg<'_>) -> bool {
        let Some(f) = self.create_dlg else {
            return false;
        };
        // SAFETY: per the contract.
        unsafe { f(msg.as_ptr(), 0) >= 0 }
    }

    /// The dialog of the message being processed (no reference taken), borrowed as long as
    /// that message.
    pub(crate) fn current<'m>(&self, _msg: &Msg<'m>) -> Option<Dlg<'m>> {
        let f = self.get_dlg?;
        // SAFETY: `get_dlg` reads the current processing context; the cell it returns stays
        // live while the current message or callback is processed.
        unsafe { Dlg::from_ptr(f()) }
    }

    /// Runs `f` on the dialog being processed (no reference taken; the borrow ends with `f`).
    pub(crate) fn with_current<R>(&self, f: impl FnOnce(&Dlg<'_>) -> R) -> Option<R> {
        let get = self.get_dlg?;
        // SAFETY: `get_dlg` reads the current processing context; the cell it returns stays
        // live while the current message or callback is processed, which outlasts `f`.
        let dlg = unsafe { Dlg::from_ptr(get()) }?;
        Some(f(&dlg))
    }

    /// `$DLG_did` of a dialog (copied out of the module's static buffer at once).
    pub(crate) fn did(&self, dlg: &Dlg<'_>) -> Option<Vec<u8>> {
        let f = self.get_dlg_did?;
        // SAFETY: live cell; the returned `str` is a static buffer, copied before any other
        // dialog call.
        unsafe {
            let s = f(dlg.as_ptr());
            (!s.is_null()).then(|| cstr::str_bytes(s).to_vec())
        }
    }

    fn store(&self, dlg: &Dlg<'_>, name: &[u8], val: Option<IntStr>, ty: c_int) -> bool {
        let Some(f) = self.store_dlg_value else {
            return false;
        };
        let mut name = borrowed_str(name);
        let mut val = val;
        let pval = val
            .as_mut()
            .map_or(std::ptr::null_mut(), |v| v as *mut IntStr);
        // SAFETY: live cell; the module copies the name and the value into shm.
        unsafe { f(dlg.as_ptr(), &mut name, pval, ty) == 0 }
    }

    /// Stores a string value (replacing any value of that name).
    pub(crate) fn store_str(&self, dlg: &Dlg<'_>, name: &[u8], value: &[u8]) -> bool {
        let v = IntStr {
            s: borrowed_str(value),
        };
        self.store(dlg, name, Some(v), DLG_VAL_TYPE_STR)
    }

    /// Deletes a value (no error when it does not exist).
    pub(crate) fn delete(&self, dlg: &Dlg<'_>, name: &[u8]) -> bool {
        self.store(dlg, name, None, DLG_VAL_TYPE_NONE)
    }

    /// Fetches a value; `None` when it does not exist.
    pub(crate) fn fetch(&self, dlg: &Dlg<'_>, name: &[u8]) -> Option<DlgValue> {
        let f = self.fetch_dlg_value?;
        let name = borrowed_str(name);
        let mut ty: c_int = 0;
        let mut out = IntStr { n: 0 };
        // SAFETY: live cell; with `val_has_buf = 0` a string goes to the module's static pkg
        // buffer, copied before any other dialog call.
        unsafe {
            if f(dlg.as_ptr(), &name, &mut ty, &mut out, 0) < 0 {
                return None;
            }
            Some(match ty {
                DLG_VAL_TYPE_STR => DlgValue::Str(cstr::str_bytes(&out.s).to_vec()),
                DLG_VAL_TYPE_INT => DlgValue::Int(out.n),
                _ => DlgValue::Flag,
            })
        }
    }

    /// Registers a callback on a dialog (no parameter). `false` on failure.
    pub(crate) fn register(&self, dlg: &Dlg<'_>, types: c_int, cb: DialogCb) -> bool {
        let Some(f) = self.register_dlgcb else {
            return false;
        };
        // SAFETY: live cell; `cb` is an `extern "C"` function of this module, which is never
        // unloaded; no parameter and no free function.
        unsafe { f(dlg.as_ptr(), types, Some(cb), std::ptr::null_mut(), None) == 0 }
    }

    /// Registers a global callback (`dlg` NULL), e.g. `DLGCB_LOADED`, which must be
    /// registered alone. The dialog module runs a `DLGCB_LOADED` callback at once for every
    /// dialog already in memory. `false` on failure.
    pub(crate) fn register_global(&self, types: c_int, cb: DialogCb) -> bool {
        let Some(f) = self.register_dlgcb else {
            return false;
        };
        // SAFETY: NULL dialog selects the global lists; `cb` is an `extern "C"` function of
        // this module, which is never unloaded; no parameter and no free function.
        unsafe {
            f(
                std::ptr::null_mut(),
                types,
                Some(cb),
                std::ptr::null_mut(),
                None,
            ) == 0
        }
    }

    /// `terminate_dlg(NULL, h_entry, h_id, reason)`: 1 = ended (BYE both ways), 0 = no such
    /// dialog, -1 = failure.
    pub(crate) fn terminate(&self, h_entry: u32, h_id: u32, reason: &[u8]) -> c_int {
        let Some(f) = self.terminate_dlg else {
            return -1;
        };
        let reason = borrowed_str(reason);
        // SAFETY: the module looks the dialog up by ids under its own locks and copies the
        // reason; NULL Call-ID selects the lookup by ids.
        unsafe { f(std::ptr::null(), h_entry, h_id, &reason) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn layouts_match_the_host_profile() {
        use crate::host::ffi::sys::probed;
        assert_eq!(size_of::<DlgBinds>(), probed::SIZEOF_DLG_BINDS);
        assert_eq!(
            offset_of!(DlgBinds, get_dlg_did),
            probed::DLG_BINDS_GET_DLG_DID
        );
        assert_eq!(
            offset_of!(DlgBinds, terminate_dlg),
            probed::DLG_BINDS_TERMINATE_DLG
        );
        assert_eq!(size_of::<DlgCbParams>(), probed::SIZEOF_DLG_CB_PARAMS);
        assert_eq!(size_of::<DlgBinds>(), 272);
        assert_eq!(offset_of!(DlgBinds, register_dlgcb), 0);
        assert_eq!(offset_of!(DlgBinds, create_dlg), 8);
        assert_eq!(offset_of!(DlgBinds, get_dlg), 16);
        assert_eq!(offset_of!(DlgBinds, store_dlg_value), 64);
        assert_eq!(offset_of!(DlgBinds, fetch_dlg_value), 72);
        assert_eq!(offset_of!(DlgBinds, terminate_dlg), 80);
        assert_eq!(offset_of!(DlgBinds, get_dlg_did), 152);
        assert_eq!(size_of::<DlgCbParams>(), 40);
        assert_eq!(offset_of!(DlgCbParams, msg), 0);
        assert_eq!(offset_of!(DlgCbParams, direction), 8);
        assert_eq!(offset_of!(DlgCbParams, is_active), 16);
        assert_eq!(offset_of!(DlgCbParams, param), 32);
        assert_eq!(size_of::<IntStr>(), 16);
    }

    /// A fake `dlg_cell` with two legs, read through the accessors.
    #[test]
    fn cell_fields_are_read_at_their_offsets() {
        let mut legs = vec![0u8; 3 * off::LEG_SIZE];
        let (ft, tt1, tt2) = (b"from-tag".to_vec(), b"to-1".to_vec(), b"to-2".to_vec());
        for (i, t) in [&ft, &tt1, &tt2].into_iter().enumerate() {
            let s = borrowed_str(t);
            let at = i * off::LEG_SIZE + off::LEG_TAG;
            legs[at..at + 8].copy_from_slice(&(s.s as usize).to_ne_bytes());
            legs[at + 8..at + 12].copy_from_slice(&s.len.to_ne_bytes());
        }
        let callid = b"abc@host".to_vec();
        let mut cell = vec![0u8; 304];
        cell[off::H_ID..off::H_ID + 4].copy_from_slice(&7u32.to_ne_bytes());
        cell[off::H_ENTRY..off::H_ENTRY + 4].copy_from_slice(&0x1a2u32.to_ne_bytes());
        let c = borrowed_str(&callid);
        cell[off::CALLID..off::CALLID + 8].copy_from_slice(&(c.s as usize).to_ne_bytes());
        cell[off::CALLID + 8..off::CALLID + 12].copy_from_slice(&c.len.to_ne_bytes());
        cell[off::LEGS..off::LEGS + 8].copy_from_slice(&(legs.as_ptr() as usize).to_ne_bytes());
        cell[off::LEGS_NO] = 3;
        // SAFETY: the fake cell and its legs outlive the accessors below.
        let d = unsafe { Dlg::from_ptr(cell.as_mut_ptr().cast()) }.unwrap();
        // SAFETY: `h_entry` and `h_id` are unsigned ints of the fake cell.
        let ids: (u32, u32) = unsafe { (d.field(off::H_ENTRY), d.field(off::H_ID)) };
        assert_eq!(ids, (0x1a2, 7));
        assert_eq!(d.call_id(), callid);
        assert_eq!(d.caller_tag(), Some(&ft[..]));
        assert_eq!(d.callee_tag(), Some(&tt1[..]), "no 2xx: first callee leg");
        cell[off::LEGS_NO + DLG_LEG_200OK] = 2;
        assert_eq!(d.callee_tag(), Some(&tt2[..]), "the leg that sent the 2xx");
        cell[off::LEGS_NO] = 1;
        cell[off::LEGS_NO + DLG_LEG_200OK] = 0;
        assert_eq!(d.callee_tag(), None, "early failure: no callee leg yet");
    }
}

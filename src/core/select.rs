//! Node selection and shared-health decisions (spec §2.3, §2.4).

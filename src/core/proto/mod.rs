//! RTPProxy control protocol, sans-IO (spec §3).

//! RK3588 board facts, tuning and telemetry (see the module docs).

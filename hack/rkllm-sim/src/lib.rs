//! ABI-exact stand-in for librkllmrt.so (see README.md).

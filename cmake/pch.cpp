// Anchor translation unit for the shared precompiled header (see
// cmake/finetuneDevelopment.cmake); it holds no code.

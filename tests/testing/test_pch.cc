// Compiles the precompiled header of GoogleTest and GoogleMock that every test executable reuses
// (tests/CMakeLists.txt); it has no code of its own.

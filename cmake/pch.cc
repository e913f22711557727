// Anchor of the shared precompiled header (posttrain_pch); see framework/CMakeLists.txt.

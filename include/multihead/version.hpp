// multihead's version: the one place it is written. CMake's project() reads it from here, so the
// package version and these macros cannot disagree.
//
// Compatibility, while the major version is 0 (see CHANGELOG.md): a minor release (0.1 → 0.2)
// may break the API, a patch release (0.1.0 → 0.1.1) does not. The CMake package therefore
// accepts a request for 0.1 only from 0.1.x. From 1.0 on, the usual rule: breaking changes bump
// the major version.
#pragma once

#define MULTIHEAD_VERSION_MAJOR 0
#define MULTIHEAD_VERSION_MINOR 4
#define MULTIHEAD_VERSION_PATCH 0

// One number that orders releases: 10000·major + 100·minor + patch (0.2.0 is 200).
#define MULTIHEAD_VERSION \
  (MULTIHEAD_VERSION_MAJOR * 10000 + MULTIHEAD_VERSION_MINOR * 100 + MULTIHEAD_VERSION_PATCH)

#pragma once
// libfarsight's public API: load a model (Session), run forward steps over the paged KV cache,
// and the pieces the CLI and server are built from.
#include "engine/session.h"  // IWYU pragma: export
#include "io/config.h"       // IWYU pragma: export

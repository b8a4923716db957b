/* Stand-in (see TargetConditionals.h): check-only compiles of ring's C for darwin. */
#pragma once
#define assert(x) ((void)0)

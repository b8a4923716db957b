/* Stand-in for the Apple SDK header, only so tests/cross-check.sh can run ring's build script
 * while type-checking kiln for aarch64-apple-darwin on Linux. Never used to build a binary. */
#pragma once
#define TARGET_OS_MAC 1
#define TARGET_OS_OSX 1
#define TARGET_OS_IPHONE 0
#define TARGET_OS_IOS 0
#define TARGET_OS_TV 0
#define TARGET_OS_WATCH 0
#define TARGET_OS_SIMULATOR 0

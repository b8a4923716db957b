/* bcryptprimitives.dll with ProcessPrng, for running Rust's Windows test executables under
 * Wine 8.0 (Debian 12), whose bcryptprimitives lacks it: Rust's std asks it for random bytes
 * (HashMap keys). A wrapper over RtlGenRandom (advapi32's SystemFunction036). Used only by
 * tests/wine-tests.sh; nothing here ships. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG n = len > 0x10000000 ? 0x10000000 : (ULONG)len;
        if (!SystemFunction036(data, n)) {
            return FALSE;
        }
        data += n;
        len -= n;
    }
    return TRUE;
}

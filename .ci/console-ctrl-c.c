/* Windows: press Ctrl+C in the console of process PID, for the tests' stop_signal.
 * Windows raises Ctrl+C for every process attached to one console, so the test starts the
 * server on a console of its own; this helper attaches to that console, ignores the event
 * itself and raises it there. Exit status: 0 sent, 2 cannot attach, 3 cannot raise. */
#include <windows.h>
#include <stdlib.h>

int main(int argc, char **argv)
{
    if (argc != 2)
        return 64;
    DWORD pid = strtoul(argv[1], NULL, 10);
    FreeConsole();
    if (!AttachConsole(pid))
        return 2;
    SetConsoleCtrlHandler(NULL, TRUE);
    if (!GenerateConsoleCtrlEvent(CTRL_C_EVENT, 0))
        return 3;
    return 0;
}

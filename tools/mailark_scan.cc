// mailark-scan: the scan host (scanner/scan_host.h). Started by mailark with its control socket as
// descriptor 3; loads the signature engine and forks the single-threaded processes that scan.
#include "scanner/scan_host.h"

int main(int argc, char** argv) { return mailark::scanner::scan_host_main(argc, argv); }

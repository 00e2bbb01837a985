#include <cstdio>
int main() { std::puts("qpeft"); return 0; }

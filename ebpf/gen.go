// Package ebpf holds berth's tc programs (C sources in this directory,
// compiled by bpf2go; the generated Go and objects are committed so builds
// need no clang) and the Go side that loads, attaches and feeds them.
package ebpf

//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type endpoint -type allow_key -type allow_val -type drop_key -type addr tenant tenant.c
//go:generate go tool bpf2go -cc clang -cflags "-O2 -g -Wall -Werror -I/usr/include/x86_64-linux-gnu" -target bpfel -type edt_key -type edt_state shape shape.c

package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/berthdev/berth/internal/atomicfile"
)

// newInstallCommand copies the CNI plugin binary out of the image onto the
// host, as the DaemonSet's init container. The image is FROM scratch, so
// there is no cp; and the copy must be atomic because kubelet's runtime
// may exec the plugin at any moment.
func newInstallCommand() *cobra.Command {
	var from, to string
	cmd := &cobra.Command{
		Use:   "install-cni",
		Short: "copy the berth CNI plugin onto the host atomically (the DaemonSet's init container)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := installFile(from, to); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed %s as %s\n", from, to)
			return nil
		},
	}
	cmd.Flags().StringVar(&from, "from", "/usr/local/bin/berth", "plugin binary in the image")
	cmd.Flags().StringVar(&to, "to", "/host/opt/cni/bin/berth", "destination on the host")
	return cmd
}

// installFile replaces dst atomically, so a concurrent exec sees either
// the old binary or the new one.
func installFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return atomicfile.Write(dst, 0o755, func(w io.Writer) error {
		_, err := io.Copy(w, in)
		return err
	})
}

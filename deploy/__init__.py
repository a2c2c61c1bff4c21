"""guardedge.deploy: getting guardedge onto a machine that has no network.

``guardedge bundle create`` gathers the project's wheel, every dependency as wheels for the target
machine (CPU or CUDA), the models as manifested artifacts, the container build context, the
Kubernetes manifests, the systemd unit and an install script into one directory with a sha256 list
over all of it; ``guardedge bundle verify`` checks that list on arrival. docs/airgap.md is the
procedure. The data files beside this module (container/, kubernetes/, systemd/, install.sh) are
what a bundle carries.

Nothing in guardedge.runtime imports this package; the ``guardedge`` command reaches it through
the ``guardedge.commands`` entry point (pyproject.toml).
"""

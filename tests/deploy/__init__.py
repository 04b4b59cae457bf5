"""Tests of docker/, k8s/ and vertex/: manifests, linters, the pods' commands."""

"""Tests of melfusion.evaluation."""

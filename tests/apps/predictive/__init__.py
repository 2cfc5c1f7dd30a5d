"""Tests of the predictive-maintenance (RUL) library."""

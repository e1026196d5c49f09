"""Compatibility layers for graphs and step code written for other engines."""

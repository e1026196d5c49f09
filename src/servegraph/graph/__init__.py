"""Graph definition: spec records, the fluent builder, validation, (de)serialisation, plotting."""

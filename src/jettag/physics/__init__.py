"""Physics shared by data and models: four-vector kinematics and pairwise features."""

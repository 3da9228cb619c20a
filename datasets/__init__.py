"""The embedded default data (BreastMNIST and PneumoniaMNIST, CC BY 4.0), installed as the package
data of `mail_tf.embedded` (setup.cfg maps this folder to it), so an installed wheel finds it."""

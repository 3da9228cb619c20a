"""Training curves as a PNG, from the history the loop keeps."""

from mail_tf.figures import pyplot, save_figure

plt = pyplot()


def plot_history(history, tasks, path):
    """Loss (train/val), validation accuracy and AUC per task, and learning rate against epoch."""
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    axes[0].plot(epochs, [h["train_loss"] for h in history], label="train")
    axes[0].plot(epochs, [h["val_loss"] for h in history], label="validation")
    axes[0].set_title("TMTL loss")
    for task in tasks:
        axes[1].plot(epochs, [h["val"][task]["accuracy"] for h in history], label=task)
        axes[2].plot(epochs, [h["val"][task]["auc"] or float("nan") for h in history], label=task)
    axes[1].set_title("validation accuracy")
    axes[2].set_title("validation AUC")
    axes[3].semilogy(epochs, [h["learning_rate"] for h in history])
    axes[3].set_title("learning rate")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    for ax in axes[:3]:
        ax.legend()
    save_figure(fig, path, dpi=110)

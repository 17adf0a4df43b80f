def get_project_loss_and_eval_dict():
    return {}, {}
